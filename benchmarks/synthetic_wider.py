"""Times the synthetic WIDER FACE generator: 1,000 train + 300 val images (target: < 60 s).

  python benchmarks/synthetic_wider.py [--repeats 3] [--workers N]

Prints the median wall time of `synthetic.generate` over the repeats (each into a fresh
temporary folder).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import synthetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train', type=int, default=1000)
    parser.add_argument('--val', type=int, default=300)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--workers', type=int, default=None)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            synthetic.generate(
                out, args.train, args.val, seed=0, workers=args.workers, progress=False
            )
            times.append(time.perf_counter() - start)
    print(
        f'synthetic_wider: {args.train} train + {args.val} val images in '
        f'{statistics.median(times):.1f} s (median of {args.repeats}; runs '
        f'{", ".join(f"{t:.1f}" for t in times)} s; {os.cpu_count()} cores)'
    )


if __name__ == '__main__':
    main()
