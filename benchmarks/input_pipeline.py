"""Throughput of the DSFD training input pipeline (claim: >= 60 images/s on 2 CPU cores).

Usage:
  python benchmarks/input_pipeline.py                 # generates 200 images in a temp folder
  python benchmarks/input_pipeline.py --root DIR      # any WIDER-layout folder

Without `--root` it writes a WIDER-layout folder of `--images` pictures of WIDER-like size
(1024 px wide, 600-1000 px high, JPEG quality 90, several faces each), drawn by the synthetic
WIDER generator (`safefakes_jax.data.synthetic`), or, with `--source mosaic` or when that
generator is unavailable, mosaics of scikit-image's sample photographs (natural-image JPEG
statistics) with random face boxes. TFDS preparation happens before the clock starts.

It runs `detection_pipeline.make_train_dataset` (640 x 640, augmentation on, batch 8), pulls
`--warmup` batches, then times `--repeats` runs of `--batches` batches each and prints the
median, e.g. `input_pipeline: 123.4 images/s (median of 5 runs, 640x640, augment on)`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.data import wider  # noqa: E402


def write_mosaic_wider(root: str, n_images: int, seed: int = 0) -> None:
    """A WIDER-layout train split of photo mosaics (1024 x 600..1000) with 3-15 boxes each."""
    from skimage import data as skdata  # Bundled sample photographs, no download.

    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    rng = np.random.default_rng(seed)
    txt, images_dir = wider.split_paths(root, 'train')
    annotations = []
    for i in range(n_images):
        width, height = 1024, int(rng.integers(600, 1001))
        canvas = np.zeros((height, width, 3), np.uint8)
        y = 0
        while y < height:
            x, th = 0, int(rng.integers(200, 500))
            while x < width:
                tw = int(rng.integers(200, 600))
                tile = cv2.resize(photos[int(rng.integers(len(photos)))], (tw, th))
                if rng.uniform() < 0.5:
                    tile = tile[:, ::-1]
                w, h = min(tw, width - x), min(th, height - y)
                canvas[y : y + h, x : x + w] = tile[:h, :w]
                x += tw
            y += th
        n = int(rng.integers(3, 16))
        side = np.exp(rng.uniform(np.log(8), np.log(300), n)).astype(int)
        bx = (rng.uniform(0, 1, n) * (width - side)).astype(int)
        by = (rng.uniform(0, 1, n) * (height - side)).astype(int)
        boxes = np.stack([bx, by, side, (side * rng.uniform(1.0, 1.4, n)).astype(int)], -1)
        boxes[:, 3] = np.minimum(boxes[:, 3], height - by)
        name = f'{i % 10}--Event/{i % 10}_Event_img_{i}.jpg'
        path = os.path.join(images_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, canvas[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        annotations.append(wider.ImageAnnotation(name, boxes, np.zeros((n, 6), np.int32)))
    wider.write_bbx_gt(txt, annotations)


def make_folder(root: str, n_images: int, source: str) -> str:
    """Writes the benchmark folder; returns the source actually used."""
    if source == 'synthetic':
        try:
            from safefakes_jax.data import synthetic

            synthetic.generate(root, n_images, 0, seed=0, progress=False)
            return 'synthetic'
        except Exception as e:  # The generator is optional here; say why it was not used.
            print(
                f'synthetic generator unavailable ({type(e).__name__}: {e}); using mosaics',
                file=sys.stderr,
            )
    write_mosaic_wider(root, n_images)
    return 'mosaic'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', help='WIDER-layout folder (default: generate one)')
    parser.add_argument('--images', type=int, default=200)
    parser.add_argument('--source', choices=('synthetic', 'mosaic'), default='synthetic')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--image-size', type=int, default=640)
    parser.add_argument('--warmup', type=int, default=10, help='batches before timing')
    parser.add_argument('--batches', type=int, default=25, help='batches per timed run')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--no-augment', action='store_true')
    args = parser.parse_args()

    import tensorflow_datasets as tfds

    from safefakes_jax.data import detection_pipeline, tfds_wider

    tfds.disable_progress_bar()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = os.path.join(tmp, 'wider')
            used = make_folder(root, args.images, args.source)
            print(f'generated {args.images} {used} images in {root}', file=sys.stderr)
        data_dir = os.path.join(tmp, 'tfds') if args.root is None else None
        tfds_wider.prepare(root, data_dir)
        txt, images_dir = wider.split_paths(root, 'train')
        anns = wider.read_bbx_gt(txt)
        sizes = [os.path.getsize(os.path.join(images_dir, a.name)) for a in anns]
        print(
            f'{len(anns)} images, mean {np.mean(sizes) / 1e3:.0f} kB, '
            f'{np.mean([len(a.valid_boxes) for a in anns]):.1f} faces/image, '
            f'{os.cpu_count()} CPUs',
            file=sys.stderr,
        )

        ds = detection_pipeline.make_train_dataset(
            root,
            batch_size=args.batch_size,
            image_size=args.image_size,
            augment=not args.no_augment,
            data_dir=data_dir,
            process_index=0,
            process_count=1,
        )
        it = iter(ds)
        for _ in range(args.warmup):
            next(it)
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.batches):
                batch = next(it)
            batch['image'].numpy()  # Make sure the last batch is materialised.
            rates.append(args.batches * args.batch_size / (time.perf_counter() - start))
        print('runs: ' + ', '.join(f'{r:.1f}' for r in rates), file=sys.stderr)
        size = args.image_size
        print(
            f'input_pipeline: {statistics.median(rates):.1f} images/s (median of '
            f'{args.repeats} runs, {size}x{size}, augment '
            f'{"off" if args.no_augment else "on"})'
        )


if __name__ == '__main__':
    main()
