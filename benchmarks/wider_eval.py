"""Times the WIDER FACE evaluator on a case of the full val size (3,226 images, ~39.7k faces).

Usage:
  python benchmarks/wider_eval.py                     # generates the case in a temp folder
  python benchmarks/wider_eval.py --out DIR [--reuse] # keeps it in DIR (--reuse: no regeneration)
  python benchmarks/wider_eval.py --port PORT_DIR --port_python PORT_VENV/bin/python [--port_sorted]

It writes, deterministically from `--seed`, an evaluation case the size of the WIDER FACE val
split (`shared/reference/wider_eval.md` §1): 61 events, 3,226 images, 39,704 faces (4 images
have none), heavy-tailed faces per image (some images with hundreds), mostly small faces, and
nested keep lists of 31,958 / 13,319 / 7,211 faces (hard / medium / easy) chosen by face height.
The ground truth goes to `DIR/gt` (`wider_face_val.mat` + `wider_{easy,medium,hard}_val.mat`,
written by `safefakes_jax.data.wider`), the detections to `DIR/pred/<event>/<stem>.txt` in the
DSFD text format (`event/stem.jpg`, count, rows `%.1f %.1f %.1f %.1f %.3f`), 150 per image on
average: jittered copies of most faces with high-ish scores, a few duplicates and random false
positives with lower scores, unsorted within each file (as detectors that skip sorting write).

It then times `safefakes_jax.evaluation.wider_ap.evaluate(DIR/pred, DIR/gt)` end to end (file
reading included): one warm-up, then the median of `--repeats`, e.g.
  wider_eval: 2.00 s median of 5 (3226 images, 39704 faces, 483,900 detections); APs ...

With `--port DIR`, a checkout of the public Python port (wondervictor/WiderFace-Evaluation)
with its Cython `bbox` extension built, it also runs `python evaluation.py -p DIR/pred -g DIR/gt`
in DIR with `--port_python` (`--port_repeats` times, in a subprocess, so its time includes the
interpreter start) and prints the speed-up and the port's APs. The port does not sort the rows
of a file by score (wider_eval.md §6), so on these unsorted files its APs are far below the
official protocol's (0.03 / 0.05 / 0.08 instead of 0.95 / 0.91 / 0.79 with the default case).
`--port_sorted` also runs it (untimed) on a copy of the files sorted by score, descending and
stable, where it agrees with `wider_ap` (identical APs on the default case).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import wider, wider_mat  # noqa: E402

# WIDER FACE val (wider_eval.md §1): images, real faces, 0-face images, kept faces per setting.
VAL_IMAGES, VAL_EVENTS, VAL_FACES, VAL_EMPTY = 3226, 61, 39704, 4
VAL_KEEP = {'hard': 31958, 'medium': 13319, 'easy': 7211}
# Fractions of valid faces with h >= 10 and h >= 50 in the real val split (32,764 and 7,329).
FRAC_H10, FRAC_H50 = 32764 / VAL_FACES, 7329 / VAL_FACES
FRAC_INVALID = 585 / VAL_FACES
PRED_FORMAT = '%.1f %.1f %.1f %.1f %.3f'  # DSFD tools/wider_test.py
CASE_FILE = 'case.json'
AP_PATTERN = re.compile(r'(Easy|Medium|Hard)\s+Val AP:\s*([-+0-9.eEnaN]+)')


# --------------------------------------------------------------------------- the case


def _fix_total(counts: np.ndarray, total: int, rng: np.random.Generator, low: int) -> np.ndarray:
    """Adds or removes units on random entries (staying >= low) until `counts` sums to total."""
    if total < low * len(counts):
        raise ValueError(f'cannot spread {total} over {len(counts)} entries of at least {low}')
    counts = counts.copy()
    while (diff := total - int(counts.sum())) != 0:
        if diff > 0:
            np.add.at(counts, rng.choice(len(counts), diff, p=counts / counts.sum()), 1)
        else:
            pool = np.flatnonzero(counts > low)
            pick = rng.choice(pool, min(-diff, len(pool)), replace=False)
            counts[pick] -= 1
    return counts


def _face_counts(n_images: int, n_faces: int, n_empty: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed faces per image: mostly a few, 15% crowds of tens to hundreds."""
    crowd = rng.random(n_images) < 0.15
    log_n = np.where(crowd, rng.normal(3.3, 1.0, n_images), rng.normal(1.0, 0.9, n_images))
    counts = np.clip(np.exp(log_n), 1, 700)
    counts = np.maximum(1, np.round(counts * n_faces / counts.sum())).astype(np.int64)
    empty = rng.choice(n_images, n_empty, replace=False)
    counts[empty] = 0
    live = np.setdiff1d(np.arange(n_images), empty)
    counts[live] = _fix_total(counts[live], n_faces, rng, low=1)
    return counts


def _event_sizes(n_images: int, n_events: int, rng: np.random.Generator) -> np.ndarray:
    """Images per event, gamma-distributed like WIDER's (16 to 120 images at the val size)."""
    low = max(1, min(10, n_images // n_events))
    sizes = np.maximum(low, np.round(rng.gamma(3.0, 1.0, n_events) / 3.0 * n_images / n_events))
    return _fix_total(sizes.astype(np.int64), n_images, rng, low=low)


def _face_heights(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Face heights, smaller in crowded images, calibrated to the val split's size quantiles."""
    per_image = -0.35 * np.log(np.maximum(counts, 1)) + rng.normal(0, 0.5, len(counts))
    log_h = np.repeat(per_image, counts) + rng.normal(0, 0.55, int(counts.sum()))
    # Affine map in log space: P(h >= 10) and P(h >= 50) as in the val split.
    q_lo, q_hi = np.quantile(log_h, [1 - FRAC_H10, 1 - FRAC_H50])
    scale = (np.log(50) - np.log(10)) / (q_hi - q_lo)
    return np.exp(np.log(10) + (log_h - q_lo) * scale)


def _keep_lists(
    heights: np.ndarray, invalid: np.ndarray, n_keep: dict[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Nested keep masks (easy in medium in hard): the tallest valid faces, with some noise."""
    keep, pool = {}, ~invalid
    for setting in ('hard', 'medium', 'easy'):
        score = np.log(heights) + rng.normal(0, 0.03, len(heights))
        score[~pool] = -np.inf
        chosen = np.zeros(len(heights), bool)
        chosen[np.argsort(-score, kind='stable')[: n_keep[setting]]] = True
        keep[setting] = pool = chosen
    return keep


def _hits(boxes: np.ndarray, heights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[M, 5] x y w h score: jittered copies of most faces (fewer small ones), 5% duplicates."""
    z = np.clip((np.log(np.maximum(heights, 1)) - np.log(6)) / (np.log(80) - np.log(6)), 0, 1)
    hit = np.flatnonzero(rng.random(len(boxes)) < 0.25 + 0.73 * np.sqrt(z))
    dup = hit[rng.random(len(hit)) < 0.05]
    src, is_dup = np.concatenate([hit, dup]), np.arange(len(hit) + len(dup)) >= len(hit)
    b, zs = boxes[src].astype(np.float64), z[src]
    sigma = ((0.05 + 0.08 * (1 - zs)) * np.where(is_dup, 2.5, 1.0))[:, None]
    centre = b[:, :2] + b[:, 2:] / 2 + rng.normal(0, 1, (len(b), 2)) * sigma * b[:, 2:]
    size = b[:, 2:] * np.exp(rng.normal(0, 1, (len(b), 2)) * sigma)
    score = np.clip(rng.normal(0.55 + 0.4 * zs, 0.12), 0.05, 1.0) * np.where(is_dup, 0.6, 1.0)
    return np.column_stack([centre - size / 2, size, score])


def _false_positives(n: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 5] random face-sized boxes with low scores (a long tail of higher ones)."""
    h = np.exp(rng.normal(np.log(18), 0.9, n)).clip(3, 0.9 * height)
    w = h * rng.uniform(0.6, 1.0, n)
    return np.column_stack(
        [
            rng.random(n) * (width - w),
            rng.random(n) * (height - h),
            w,
            h,
            np.clip(rng.beta(1.3, 7.0, n), 0.01, 1.0),
        ]
    )


def write_prediction_file(path: str, name: str, dets: np.ndarray) -> None:
    """One file in the DSFD format: `event/stem.jpg`, the count, `%.1f x4 %.3f` rows."""
    rows = ''.join(PRED_FORMAT % tuple(row) + '\n' for row in dets.tolist())
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'{name}\n{len(dets)}\n{rows}')


def generate_case(
    out: str,
    seed: int = 0,
    n_images: int = VAL_IMAGES,
    n_events: int = VAL_EVENTS,
    n_faces: int | None = None,
    n_empty: int = VAL_EMPTY,
    dets_per_image: int = 150,
) -> dict:
    """Writes `out/gt` and `out/pred` (see the module docstring); returns the case's counts."""
    rng = np.random.default_rng(seed)
    if n_faces is None:
        n_faces = round(VAL_FACES * n_images / VAL_IMAGES)
    n_keep = {s: round(k * n_faces / VAL_FACES) for s, k in VAL_KEEP.items()}
    counts = _face_counts(n_images, n_faces, n_empty, rng)
    heights = _face_heights(counts, rng)
    invalid = rng.random(n_faces) < FRAC_INVALID * 2 * (heights < np.median(heights))
    keep = _keep_lists(heights, invalid, n_keep, rng)
    event_of = np.repeat(np.arange(n_events), _event_sizes(n_images, n_events, rng))
    img_h = rng.integers(600, 1400, n_images)
    img_w = 1024
    starts = np.concatenate([[0], np.cumsum(counts)])

    annotations, keep_idx, hits = [], {s: [] for s in keep}, []
    for i in range(n_images):
        event = f'{event_of[i]}--Event{event_of[i]}'
        stem = f'{event_of[i]}_Event{event_of[i]}_{i}'  # Ends in a digit, as WIDER names do.
        sl = slice(starts[i], starts[i + 1])
        h = np.clip(np.round(heights[sl]), 1, 0.9 * img_h[i])
        w = np.clip(np.round(h * rng.normal(0.8, 0.1, len(h))), 1, 0.9 * img_w)
        x = np.floor(rng.random(len(h)) * (img_w - w))
        y = np.floor(rng.random(len(h)) * (img_h[i] - h))
        boxes = np.column_stack([x, y, w, h]).astype(np.int32)
        attrs = np.column_stack(
            [
                np.where(h < 20, rng.integers(1, 3, len(h)), rng.integers(0, 2, len(h))),
                rng.random(len(h)) < 0.03,
                rng.random(len(h)) < 0.04,
                invalid[sl],
                rng.choice(3, len(h), p=[0.6, 0.25, 0.15]),
                rng.random(len(h)) < 0.05,
            ]
        ).astype(np.int32)
        annotations.append(wider.ImageAnnotation(f'{event}/{stem}.jpg', boxes, attrs))
        for s in keep:
            keep_idx[s].append(np.flatnonzero(keep[s][sl]))
        hits.append(_hits(boxes, h, rng))

    # False positives fill each file to about dets_per_image rows (at least 10 per image; crowded
    # images get more rows), the total being exactly dets_per_image * n_images when possible.
    n_hits = np.array([len(t) for t in hits])
    n_fp = np.maximum(10, rng.poisson(dets_per_image, n_images) - n_hits)
    n_fp = _fix_total(
        n_fp, max(dets_per_image * n_images - int(n_hits.sum()), 10 * n_images), rng, low=10
    )
    pred_dir = os.path.join(out, 'pred')
    n_written = 0
    for i, ann in enumerate(annotations):
        dets = np.concatenate([hits[i], _false_positives(int(n_fp[i]), img_w, int(img_h[i]), rng)])
        dets[:, 0] = np.clip(dets[:, 0], 0, img_w - 2)
        dets[:, 1] = np.clip(dets[:, 1], 0, img_h[i] - 2)
        dets[:, 2:4] = np.maximum(dets[:, 2:4], 1.0)
        dets = dets[rng.permutation(len(dets))]  # Unsorted, like a detector that skips sorting.
        os.makedirs(os.path.join(pred_dir, ann.event), exist_ok=True)
        write_prediction_file(os.path.join(pred_dir, ann.event, ann.stem + '.txt'), ann.name, dets)
        n_written += len(dets)
    wider_mat.write_ground_truth(os.path.join(out, 'gt'), annotations, keep_idx)
    case = {
        'seed': seed,
        'images': n_images,
        'events': n_events,
        'faces': n_faces,
        'empty_images': n_empty,
        'detections': n_written,
        'max_faces_per_image': int(counts.max()),
        'kept': {s: int(sum(len(k) for k in keep_idx[s])) for s in keep},
    }
    with open(os.path.join(out, CASE_FILE), 'w', encoding='utf-8') as f:
        json.dump(case, f, indent=1)
    return case


def write_sorted_copy(pred_dir: str, out_dir: str) -> None:
    """Copies a prediction folder with each file's rows sorted by score (descending, stable)."""
    for event in sorted(os.listdir(pred_dir)):
        os.makedirs(os.path.join(out_dir, event), exist_ok=True)
        for fname in sorted(os.listdir(os.path.join(pred_dir, event))):
            with open(os.path.join(pred_dir, event, fname), encoding='utf-8') as f:
                lines = f.read().splitlines()
            rows = [r for r in lines[2:] if r.strip()]
            scores = np.array([float(r.split()[4]) for r in rows])
            order = np.argsort(-scores, kind='stable')
            with open(os.path.join(out_dir, event, fname), 'w', encoding='utf-8') as f:
                f.write('\n'.join(lines[:2] + [rows[k] for k in order]) + '\n')


# --------------------------------------------------------------------------- timing


def run_port(
    port_dir: str, python: str, pred_dir: str, gt_dir: str, timeout: float
) -> tuple[float, dict[str, float]]:
    """Runs the port's `evaluation.py` once; returns (wall seconds, its APs)."""
    cmd = [python, 'evaluation.py', '-p', os.path.abspath(pred_dir), '-g', os.path.abspath(gt_dir)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=port_dir, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f'port failed (exit {proc.returncode}): {" ".join(cmd)}\n'
            f'{(proc.stdout + proc.stderr)[-3000:]}'
        )
    aps = {m.group(1).lower(): float(m.group(2)) for m in AP_PATTERN.finditer(proc.stdout)}
    if set(aps) != {'easy', 'medium', 'hard'}:
        raise RuntimeError(f'no APs in the port output:\n{proc.stdout[-2000:]}')
    return seconds, aps


def _fmt_aps(aps: dict[str, float]) -> str:
    return '/'.join(f'{aps[s]:.4f}' for s in ('easy', 'medium', 'hard'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='folder for the case (default: a temporary folder)')
    parser.add_argument(
        '--reuse',
        action='store_true',
        help='use the case already in --out instead of regenerating it',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--images', type=int, default=VAL_IMAGES)
    parser.add_argument('--events', type=int, default=VAL_EVENTS)
    parser.add_argument(
        '--faces',
        type=int,
        default=None,
        help=f'real faces (default {VAL_FACES} scaled by --images)',
    )
    parser.add_argument('--dets_per_image', type=int, default=150)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--port', help='checkout of wondervictor/WiderFace-Evaluation, bbox built')
    parser.add_argument(
        '--port_python',
        default=sys.executable,
        help='Python that runs the port (default: this one)',
    )
    parser.add_argument('--port_repeats', type=int, default=1)
    parser.add_argument('--port_timeout', type=float, default=3600.0)
    parser.add_argument(
        '--port_sorted',
        action='store_true',
        help='also run the port (untimed) on a copy sorted by score',
    )
    args = parser.parse_args()

    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix='wider_eval_')
        out = tmp.name
    else:
        out = args.out
    try:
        case_path = os.path.join(out, CASE_FILE)
        if args.reuse:
            if not os.path.isfile(case_path):
                parser.error(f'--reuse: no case in {out} ({CASE_FILE} missing)')
            with open(case_path, encoding='utf-8') as f:
                case = json.load(f)
        else:
            for sub in ('pred', 'pred_sorted', 'gt'):
                if os.path.exists(os.path.join(out, sub)):
                    if not os.path.isfile(case_path):
                        parser.error(f'{out}/{sub} exists and is not a case of this script')
                    shutil.rmtree(os.path.join(out, sub))
            start = time.perf_counter()
            case = generate_case(
                out,
                args.seed,
                args.images,
                args.events,
                args.faces,
                dets_per_image=args.dets_per_image,
            )
            print(
                f'generated {out} in {time.perf_counter() - start:.1f} s: {case}', file=sys.stderr
            )
        pred_dir, gt_dir = os.path.join(out, 'pred'), os.path.join(out, 'gt')
        what = f'{case["images"]} images, {case["faces"]} faces, {case["detections"]:,} detections'

        status, ours, our_aps = 0, None, None
        try:
            from safefakes_jax.evaluation import wider_ap

            evaluate = wider_ap.evaluate
        except (ImportError, AttributeError) as e:
            print(
                f'wider_eval: safefakes_jax.evaluation.wider_ap.evaluate unavailable ({e})'
                + ('; timing the port only' if args.port else ''),
                file=sys.stderr,
            )
            if not args.port:
                return 1
            status = 1
        else:
            result = evaluate(pred_dir, gt_dir, iou_thresh=0.5)  # Warm-up.
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = evaluate(pred_dir, gt_dir, iou_thresh=0.5)
                times.append(time.perf_counter() - start)
            ours = statistics.median(times)
            our_aps = {s: float(result[s]) for s in ('easy', 'medium', 'hard')}
            print(
                f'wider_eval: {ours:.2f} s median of {args.repeats} ({what}); '
                f'APs easy/medium/hard = {_fmt_aps(our_aps)} '
                f'(runs {", ".join(f"{t:.2f}" for t in times)} s; {os.cpu_count()} cores)'
            )

        if not args.port:
            print(
                'wider_eval: the public Python port was not timed; pass --port DIR (a checkout '
                'of github.com/wondervictor/WiderFace-Evaluation with `python setup.py '
                'build_ext --inplace` done) and --port_python PY (a Python with numpy<1.24, '
                'scipy, tqdm)'
            )
            return status
        port_times, port_aps = [], {}
        try:
            for _ in range(args.port_repeats):
                seconds, port_aps = run_port(
                    args.port, args.port_python, pred_dir, gt_dir, args.port_timeout
                )
                port_times.append(seconds)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print(f'wider_eval: {e}', file=sys.stderr)
            return 1
        port = statistics.median(port_times)
        line = (
            f'wider_eval: port {port:.1f} s median of {args.port_repeats} in a subprocess '
            f'({what}); APs easy/medium/hard = {_fmt_aps(port_aps)}'
        )
        if ours is not None:
            diff = '/'.join(f'{port_aps[s] - our_aps[s]:+.4f}' for s in ('easy', 'medium', 'hard'))
            line += f'; speed-up {port / ours:.0f}x; port - ours = {diff} (the port does not sort)'
        print(line)
        if args.port_sorted:
            sorted_dir = os.path.join(out, 'pred_sorted')
            if not os.path.isdir(sorted_dir):
                write_sorted_copy(pred_dir, sorted_dir)
            seconds, sorted_aps = run_port(
                args.port, args.port_python, sorted_dir, gt_dir, args.port_timeout
            )
            line = (
                f'wider_eval: port on the score-sorted copy {seconds:.1f} s; APs '
                f'easy/medium/hard = {_fmt_aps(sorted_aps)}'
            )
            if our_aps is not None:
                diff = max(abs(sorted_aps[s] - our_aps[s]) for s in our_aps)
                line += f'; max |port - ours| = {diff:.2e}'
            print(line)
        return status
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == '__main__':
    sys.exit(main())
