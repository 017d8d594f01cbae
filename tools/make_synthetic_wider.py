"""Generates a synthetic WIDER FACE (official layout + landmarks sidecar), optionally face crops.

  python tools/make_synthetic_wider.py --out cache/synthetic_wider --train 1000 --val 300 \\
      --seed 0 [--workers W] [--crops 128]

The same seed gives byte-identical files whatever the worker count. See
`safefakes_jax/data/synthetic.py` for the layout, the attribute rules and the difficulty rule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import face_crops, synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder (WIDER layout)')
    parser.add_argument('--train', type=int, default=1000, help='number of train images')
    parser.add_argument('--val', type=int, default=300, help='number of val images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--workers',
        type=int,
        default=None,
        help='processes (default: all cores; 1 = in this process)',
    )
    parser.add_argument(
        '--train_ids', '--train-ids', type=int, default=200, help='train identity pool size'
    )
    parser.add_argument(
        '--val_ids',
        '--val-ids',
        type=int,
        default=100,
        help='val identity pool size (disjoint from train)',
    )
    parser.add_argument(
        '--crops',
        type=int,
        default=None,
        metavar='SIZE',
        help='also write face_crops/<split>_<SIZE>.npz',
    )
    parser.add_argument(
        '--min_face_px',
        '--min-face-px',
        type=int,
        default=8,
        help='narrowest face kept in the crops',
    )
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0:
        parser.error('--train and --val must be >= 0')

    summary = synthetic.generate(
        args.out,
        args.train,
        args.val,
        seed=args.seed,
        workers=args.workers,
        n_train_ids=args.train_ids,
        n_val_ids=args.val_ids,
        progress=not args.quiet,
    )
    for split, s in summary['splits'].items():
        line = (
            f'{split}: {s["images"]} images, {s["faces"]} faces, '
            f'{s["zero_face_images"]} without faces, {s["identities_used"]} identities, '
            f'{s["invalid_counts"][1]} invalid'
        )
        if 'hard_faces' in s:
            line += (
                f'; keep easy/medium/hard {s["easy_faces"]}/{s["medium_faces"]}/'
                f'{s["hard_faces"]} ({s["easy_fraction_of_valid"]:.0%}/'
                f'{s["medium_fraction_of_valid"]:.0%}/{s["hard_fraction_of_valid"]:.0%} '
                'of valid faces)'
            )
        print(line)
    print(f'generated {args.out} in {summary["seconds"]:.1f} s')
    if args.crops:
        start = time.perf_counter()
        for split, n in (('train', args.train), ('val', args.val)):
            if n == 0:
                continue
            crops = face_crops.make_face_crops(
                args.out,
                split,
                args.crops,
                out_dir=os.path.join(args.out, 'face_crops'),
                min_face_px=args.min_face_px,
            )
            print(
                f'face_crops/{split}_{args.crops}.npz: {len(crops)} crops, skipped '
                f'{json.dumps(crops.skipped)}'
            )
        print(f'face crops in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
