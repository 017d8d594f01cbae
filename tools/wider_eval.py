"""Evaluates WIDER FACE predictions with the official protocol (easy / medium / hard AP).

  python tools/wider_eval.py --pred DIR --gt DIR [--json OUT] [--plot OUT.png] [--label NAME]
  python tools/wider_eval.py --pred runs/orig/pred --label original \\
      --pred runs/blur/pred --label blur --gt data/widerface/eval_tools/ground_truth \\
      --plot pr.png --json ap.json

`--pred` is a prediction folder (`<event>/<image>.txt`: name, count, `x y w h score` rows);
`--gt` the folder of `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat` (or a
WIDER-layout root that has `eval_tools/ground_truth`). Several `--pred` (each with its
`--label`) are evaluated against one ground truth and overlaid in the `--plot` figure.
`--json` writes `{"easy": .., "medium": .., "hard": ..}` for one `--pred`, and
`{label: {...}}` for several. `--recall` also prints each setting's detection rate: the share
of its faces matched by some detection (IoU >= `--iou`), whatever its score.

Exit status 2 on bad input, with one line `error: ...`: a malformed prediction file (also one
with a byte-order mark or bytes that are not UTF-8; the message names the file and line), an
event folder or file that is a symlink out of its `--pred` folder, or a `--pred` folder in
which no file matches a ground-truth image (the layout is `<pred>/<event>/<image stem>.txt`;
the message shows what was found instead). A folder matching only some images is evaluated
(the others count as images without detections) with a warning `matched N of M`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import atomic_io, wider, wider_mat  # noqa: E402
from safefakes_jax.evaluation import wider_ap  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pred', action='append', required=True, help='prediction folder')
    parser.add_argument('--label', action='append', default=[], help='name of each --pred')
    parser.add_argument('--gt', required=True, help='ground-truth folder (or WIDER root)')
    parser.add_argument('--json', help='write the APs as JSON here')
    parser.add_argument('--plot', help='write the PR curves here (.png, .pdf or .svg)')
    parser.add_argument('--iou', type=float, default=0.5, help='IoU threshold (official 0.5)')
    parser.add_argument(
        '--recall',
        action='store_true',
        help="also print the detection rate: the share of each setting's faces that some "
        'detection matches (recall at the lowest threshold)',
    )
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.pred):
        parser.error(f'{len(args.label)} --label for {len(args.pred)} --pred')
    labels = args.label or [os.path.basename(os.path.normpath(p)) for p in args.pred]
    if len(set(labels)) != len(labels):
        parser.error(f'labels must differ, got {labels}; pass --label for each --pred')
    gt_dir = args.gt
    if not os.path.isfile(os.path.join(gt_dir, 'wider_face_val.mat')):
        gt_dir = wider_mat.ground_truth_dir(gt_dir)
    try:
        gt = wider_mat.read_ground_truth(gt_dir)
        results = {}
        for label, pred in zip(labels, args.pred, strict=True):
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                results[label] = wider_ap.evaluate(pred, gt, iou_thresh=args.iou)
            seconds = time.perf_counter() - start
            for w in caught:  # One line each (partial match, unknown images, bad counts).
                print(f'warning: {label}: {w.message}', file=sys.stderr)
            r = results[label]
            print(
                f'{label}: easy {r["easy"]:.4f}  medium {r["medium"]:.4f}  '
                f'hard {r["hard"]:.4f}  ({seconds:.2f} s)'
            )
            if args.recall:
                rates = '  '.join(f'{s} {r.curves[s].recall[-1]:.4f}' for s in wider.SETTINGS)
                print(f'{label}: detection rate at IoU {args.iou}: {rates}')
    except (OSError, ValueError) as e:
        # FormatError, PathEscapeError (ValueErrors) and NoMatchingPredictionsError (an
        # OSError) name the file: one line, status 2.
        print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
        return 2
    if args.json:
        payload = (
            {s: results[labels[0]][s] for s in wider.SETTINGS}
            if len(labels) == 1
            else {lb: {s: r[s] for s in wider.SETTINGS} for lb, r in results.items()}
        )
        atomic_io.write_text(args.json, json.dumps(payload, indent=2) + '\n')
    if args.plot:
        from safefakes_jax.evaluation import pr_plots

        pr_plots.plot_pr_curves(results, args.plot)
        print(f'wrote {args.plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
