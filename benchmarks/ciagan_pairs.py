"""Cost of CIAGAN's pair batches (claim: well under 50 ms a step at R = 32, B = 16, K = 4).

Usage:
  python benchmarks/ciagan_pairs.py                        # cache/synthetic_wider (make demo)
  python benchmarks/ciagan_pairs.py --root DIR --resolution 128 --steps 20

Builds the faces of the train split in memory (`ciagan_sets.build_wider_faces`, timed: the
in-memory path a config without a prepared file takes), then times `ciagan_pairs.
pair_batches` over --steps steps after as many warm-up steps (the drawn landmark / mask
squares are cached after a face's first use). Prints wall and CPU ms per step and exits with
status 1 if the warm wall time exceeds --max_ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import ciagan_pairs, ciagan_sets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='cache/synthetic_wider')
    parser.add_argument('--resolution', type=int, default=32)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--sub_batches', type=int, default=4)
    parser.add_argument('--steps', type=int, default=50)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--max_ms', type=float, default=50.0)
    args = parser.parse_args(argv)
    t = time.perf_counter()
    faces = ciagan_sets.build_wider_faces(args.root, 'train', args.resolution)
    print(f'built {len(faces)} faces ({faces.num_classes} ids) in {time.perf_counter() - t:.1f} s')
    batches = ciagan_pairs.pair_batches(
        faces,
        batch_size=args.batch,
        sub_batches=args.sub_batches,
        resolution=args.resolution,
        seed=0,
        threads=args.threads,
    )
    for _ in range(args.steps):
        next(batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        next(batches)
    ms = (time.perf_counter() - wall) * 1000 / args.steps
    cpu_ms = (time.process_time() - cpu) * 1000 / args.steps
    print(f'pair batches: {ms:.1f} ms/step wall, {cpu_ms:.1f} ms/step CPU (max {args.max_ms})')
    return int(ms > args.max_ms)


if __name__ == '__main__':
    sys.exit(main())
