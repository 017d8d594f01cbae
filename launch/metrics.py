r"""Image and identity metrics of an anonymized set against its original (paper Table II).

  python launch/metrics.py --orig cache/synthetic_wider --anon cache/synthetic_wider_blur \
      --out cache/metrics/blur.json
  python launch/metrics.py --orig DIR --anon DIR --out metrics.json \
      --metrics l1,l2,psnr,ssim,lpips,fid,fid_dlib,identity --split train --workers 2

Faces are paired by `safefakes_jax.data.face_pairs` and measured as described in
`safefakes_jax/evaluation/set_metrics.py` (128 x 128 crops with the GANs' context; L2 is
DeepPrivacy's per-face RMSE; identity on faces >= 40 px). FID needs the FID Inception weights,
imported once with `tools/convert_torch_weights.py --format=fid_inception`; without them it is
reported as unavailable (null) with that command. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import logging  # noqa: E402

from safefakes_jax.data import atomic_io, face_pairs, root_paths, wider  # noqa: E402
from safefakes_jax.evaluation import fid, set_metrics  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--orig', required=True, help='the original WIDER-layout folder')
    parser.add_argument('--anon', required=True, help='its anonymized copy')
    parser.add_argument('--out', required=True, help='the JSON file to write')
    parser.add_argument('--metrics', default=','.join(set_metrics.METRICS))
    parser.add_argument('--split', default='train', choices=wider.SPLITS)
    parser.add_argument('--size', type=int, default=128, help='crop side in pixels')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--min_face_px', type=int, default=10)
    parser.add_argument('--identity_min_px', type=int, default=40)
    parser.add_argument('--fid_weights', default=fid.DEFAULT_WEIGHTS)
    parser.add_argument('--workers', type=int, default=2, help='processes for dlib')
    parser.add_argument('--no_progress', action='store_true')
    args = parser.parse_args(argv)
    try:
        result = set_metrics.compute(
            args.orig,
            args.anon,
            args.split,
            [m for m in args.metrics.split(',') if m],
            args.size,
            args.batch_size,
            args.min_face_px,
            args.identity_min_px,
            args.fid_weights,
            args.workers,
            not args.no_progress,
        )
    except (
        ValueError,
        face_pairs.PairInputError,
        root_paths.PathEscapeError,
        wider.FormatError,
    ) as e:
        print(f'metrics: error: {e}', file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_io.write_bytes(args.out, (json.dumps(result, indent=2) + '\n').encode())
    for name, value in result['metrics'].items():
        shown = (
            value
            if not isinstance(value, dict)
            else {k: v for k, v in value.items() if k not in ('skipped',)}
        )
        print(f'{name}: {shown}')
    for name, why in result['unavailable'].items():
        print(f'{name}: unavailable: {why}')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    logging.set_verbosity(logging.WARNING)  # No library INFO lines (orbax restoring weights).
    sys.exit(main())
