"""Cost of the conventional anonymizers over the I/O floor (claim: at most +25% per method).

Usage:
  python benchmarks/anonymize.py                    # 1,000 synthetic images in a temp folder
  python benchmarks/anonymize.py --images 200 --runs 3
  python benchmarks/anonymize.py --src DIR          # the first --images of DIR's train split

Without `--src` it draws `ceil(--oversample x --images)` synthetic WIDER images (1024 px wide,
600-1000 px high, JPEG quality 90) and keeps the `--images` with the most faces, so that the
set has WIDER's density (about 12 faces per image; the generator alone averages about 7.5).
It prints what it got (faces per image, median face width, fraction of pixels inside boxes).

Each run anonymizes the set with the dataset engine (`anonymizers.engine.run`, `--workers`
processes, JPEG quality 95, into a fresh folder) once per method, and once in the engine's
I/O-floor mode: the same code path (read, sha256, full decode, RGB conversion, a copy of the
image, re-encode, atomic write, manifest) with no anonymization. The floor's output is marked as
such and has no annotation files, so it can never pass for an anonymized dataset. Methods and
the floor alternate within each run; the figures are medians over `--runs` runs, after one
untimed warm-up pass that fills the page cache. Per method it prints images/s and the overhead
`floor images/s / method images/s - 1`, and exits with status 1 if an overhead exceeds
`--max_overhead` (0.25).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from safefakes_jax.anonymizers import engine  # noqa: E402
from safefakes_jax.data import synthetic, wider  # noqa: E402

METHODS = ('blur', 'fullblur', 'pixelate', 'blackout')


def subset(src: str, out: str, indices) -> list[wider.ImageAnnotation]:
    """A WIDER root at `out` with the train images `indices` of `src` (symlinked)."""
    txt, images = wider.require_split(src, 'train')
    anns = wider.read_bbx_gt(txt, images, strict=True)
    picked = [anns[i] for i in sorted(indices)]
    out_txt, out_images = wider.split_paths(out, 'train')
    for ann in picked:
        path = os.path.join(out_images, ann.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(images, ann.name)), path)
    wider.write_bbx_gt(out_txt, picked)
    return picked


def make_source(args, tmp: str) -> tuple[str, list[wider.ImageAnnotation]]:
    out = os.path.join(tmp, 'src')
    shutil.rmtree(out, ignore_errors=True)
    if args.src:
        txt, images = wider.require_split(args.src, 'train')
        n = min(args.images, len(wider.read_bbx_gt(txt, images, strict=True)))
        return out, subset(args.src, out, range(n))
    n_gen = math.ceil(args.oversample * args.images)
    gen = os.path.join(tmp, 'generated')
    try:  # A --tmp folder of an earlier run may hold the same images already.
        with open(os.path.join(gen, 'synthetic_info.json')) as f:
            reuse = json.load(f)['splits']['train']['images'] == n_gen
    except (OSError, ValueError, KeyError):
        reuse = False
    if not reuse:
        print(f'generating {n_gen} synthetic images ...', flush=True)
        synthetic.generate(gen, n_gen, 0, seed=0, workers=args.workers or None, progress=False)
    anns = wider.read_bbx_gt(wider.split_paths(gen, 'train')[0])
    counts = np.array([len(a.boxes) for a in anns])
    keep = np.argsort(-counts, kind='stable')[: args.images]
    return out, subset(gen, out, keep)


def describe(src: str, anns: list[wider.ImageAnnotation]) -> str:
    import PIL.Image

    faces = np.array([len(a.boxes) for a in anns])
    widths = np.concatenate([a.boxes[:, 2] for a in anns] or [np.zeros(0)])
    box_px = image_px = 0
    for ann in anns:
        with PIL.Image.open(os.path.join(wider.split_paths(src, 'train')[1], ann.name)) as im:
            w, h = im.size
        mask = np.zeros((h, w), bool)
        for x, y, bw, bh in ann.boxes:
            mask[max(y, 0) : max(y + bh, 0), max(x, 0) : max(x + bw, 0)] = True
        box_px, image_px = box_px + mask.sum(), image_px + mask.size
    return (
        f'{len(anns)} images, {faces.mean():.1f} faces/image, median face width '
        f'{np.median(widths):.0f} px, {100 * box_px / image_px:.1f}% of pixels in boxes'
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the workers)."""
    return sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ('ru_utime', 'ru_stime')
    )


def time_once(src: str, dst: str, method: str | None, workers: int) -> tuple[float, float, int]:
    """(images/s, CPU ms per image, face records) of one engine run."""
    config = ml_collections.ConfigDict(
        {
            'anonymizer': {'name': method or 'blackout'},
            'src': src,
            'dst': dst,
            'splits': ('train',),
            'workers': workers,
            'seed': 0,
            'image_format': 'jpeg',
            'jpeg_quality': 95,
            'overwrite': False,
        }
    )
    shutil.rmtree(dst, ignore_errors=True)
    start, cpu = time.perf_counter(), cpu_seconds()
    summary = engine.run(config, progress=False, io_floor=method is None)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if summary.failed or summary.processed != summary.images:
        raise RuntimeError(f'{method}: {summary.format()}')
    shutil.rmtree(dst)
    return summary.images / seconds, 1000 * cpu / summary.images, sum(summary.records.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', help='WIDER-layout folder (default: synthetic, generated)')
    parser.add_argument('--images', type=int, default=1000)
    parser.add_argument(
        '--oversample',
        type=float,
        default=2.2,
        help='synthetic images drawn per image kept (densest kept)',
    )
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--workers', type=int, default=0, help='0 = all cores')
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--max_overhead', '--max-overhead', type=float, default=0.25)
    parser.add_argument(
        '--tmp',
        help='scratch folder, kept (reuses its generated images); '
        'default: a new temp folder, removed',
    )
    args = parser.parse_args()
    workers = args.workers or (os.cpu_count() or 1)
    methods = [m for m in args.methods.split(',') if m]
    tmp = args.tmp or tempfile.mkdtemp(prefix='bench_anonymize_')
    try:
        src, anns = make_source(args, tmp)
        print(f'source: {describe(src, anns)}; {workers} workers, JPEG quality 95', flush=True)
        time_once(src, os.path.join(tmp, 'warmup'), None, workers)
        ips: dict[str | None, list[float]] = {m: [] for m in [None, *methods]}
        cpu_ms: dict[str | None, list[float]] = {m: [] for m in ips}
        n_faces = 0
        for _ in range(args.runs):
            for method in ips:
                speed, ms, n_faces = time_once(src, os.path.join(tmp, 'out'), method, workers)
                ips[method].append(speed)
                cpu_ms[method].append(ms)
        floor, floor_ms = statistics.median(ips.pop(None)), statistics.median(cpu_ms.pop(None))
        faces_per_image = n_faces / len(anns)
        print(
            f'median of {args.runs} runs; overhead = floor images/s / method images/s - 1 '
            '(CPU: method CPU / floor CPU - 1)'
        )
        print(
            f' io_floor: {floor:7.1f} images/s  {floor_ms:6.1f} CPU ms/image  '
            '(decode + re-encode, nothing anonymized)'
        )
        failed = False
        for method, speeds in ips.items():
            speed, ms = statistics.median(speeds), statistics.median(cpu_ms[method])
            overhead = floor / speed - 1
            ok = overhead <= args.max_overhead
            failed |= not ok
            print(
                f'{method:>9}: {speed:7.1f} images/s  {ms:6.1f} CPU ms/image  '
                f'{speed * faces_per_image:6.0f} faces/s  overhead {100 * overhead:+5.1f}% '
                f'(CPU {100 * (ms / floor_ms - 1):+5.1f}%)  '
                f'{"ok" if ok else "FAIL"} (<= {100 * args.max_overhead:.0f}%)'
            )
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
