"""Calibration of the leak audit: its verdict on the methods' copies and on near copies.

Usage:
  python benchmarks/audit_calibration.py --orig cache/synthetic_wider --work /tmp/audit_calib \\
      --max_images 300 --workers 2 [--json /tmp/audit_calib/summary.json]

For each method (blur, pixelate, blackout, fullblur) it audits the copy that
`python launch/anonymize.py --config=configs/anonymize/<method>.py:smoke` wrote next to the
original (`<orig>_<method>`); a method whose copy is not there (or all of them with
`--build_methods`) is anonymized here with the same settings (the config file's anonymizer,
built with `anonymizers.base.create_from_config`) into `<work>/<method>`. It then writes the
four near-copy variants of `anonymizers.audit_variants` (unaltered re-encode, brightness +6,
noise +-6, outer ring blacked out with 70% of the centre kept) into `<work>/<variant>` and audits
them too. Every audit covers the first `--max_images` images of the split (identity costs
~0.1-0.2 s a face on one core). It prints one table row per copy: faces audited, the leak
rate and the rate of each rule (a face may fire several), the identity verdicts (faces whose
original face was detectable, the match rate among them, how many had no face left), and the
mean near-copy score.

What it should show (module docstrings of `audit`, `audit_measures`, `identity`): blackout has
no leaks and an identity-match rate of 0, the near-copy variants are all leaks (re-encode and
brightness re-identified at a rate of 1, noise at 0.95: the rest is caught by `near_copy`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.anonymizers import audit, audit_variants, base  # noqa: E402
from safefakes_jax.data import wider  # noqa: E402

METHODS = ('blur', 'pixelate', 'blackout', 'fullblur')


def method_transform(method: str) -> audit_variants.Transform:
    """The anonymizer of `configs/anonymize/<method>.py`, as a `write_copy` transform."""
    config = importlib.import_module(f'configs.anonymize.{method}').get_config('smoke')
    anonymizer = base.create_from_config(config.anonymizer)
    return lambda image, boxes, rng: anonymizer(image, boxes, rng=rng).image


def _has_split(root: str, split: str) -> bool:
    return all(os.path.exists(p) for p in wider.split_paths(root, split))


def copies(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(label, folder, how it was made) of every copy to audit; writes the missing ones."""
    out = []
    for method in args.methods:
        made = os.path.normpath(args.orig) + f'_{method}'
        if not args.build_methods and _has_split(made, args.split):
            out.append((method, made, 'launch/anonymize.py'))
            continue
        dst = os.path.join(args.work, method)
        audit_variants.write_copy(
            args.orig, dst, method_transform(method), args.split, args.max_images
        )
        out.append((method, dst, 'built here'))
    for kind in args.variants:
        dst = os.path.join(args.work, kind)
        audit_variants.write_copy(
            args.orig, dst, audit_variants.variant_transform(kind), args.split, args.max_images
        )
        out.append((kind, dst, 'variant'))
    return out


def _pct(value: float | None) -> str:
    return '-' if value is None else f'{value:.3f}'


def table(rows: list[tuple[str, dict]]) -> str:
    """The calibration table (one row per copy, figures from `audit.summarize_rows`)."""
    head = (
        f'{"copy":10s} {"faces":>6s} {"leak":>6s} {"unch.":>6s} {"near":>6s} {"ident.":>6s}'
        f' | {"id n":>5s} {"match":>6s} {"noface":>6s} {"n/m":>5s} | {"ssim*":>6s}'
    )
    lines = [head, '-' * len(head)]
    for label, s in rows:
        rules = s['leak_rate_by_rule']
        lines.append(
            f'{label:10s} {s["faces_audited"]:6d} {_pct(s["leak_rate"]):>6s} '
            f'{_pct(rules["unchanged_pixels"]):>6s} {_pct(rules["near_copy"]):>6s} '
            f'{_pct(rules["identity_match"]):>6s} | {s["identity_faces"]:5d} '
            f'{_pct(s["identity_match_rate"]):>6s} {s["identity_no_face_found"]:6d} '
            f'{s["identity_no_face_in_original"]:5d} | {_pct(s["mean_near_copy_score"]):>6s}'
        )
    lines.append(
        'leak: leak rate; unch. / near / ident.: rate of faces firing unchanged_pixels '
        '/ near_copy / identity_match; id n: faces whose identity was measured '
        '(original face detected), match: identity-match rate among them, noface: no '
        'face found in the copy, n/m: not measurable (no face detected in the '
        'original); ssim*: mean near-copy score.'
    )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--orig',
        default='cache/synthetic_wider',
        help='original WIDER-layout folder (default %(default)s)',
    )
    parser.add_argument('--work', required=True, help='folder for the variant copies')
    parser.add_argument('--split', default='train', choices=wider.SPLITS)
    parser.add_argument(
        '--max_images', type=int, default=None, help='audit the first N images only (default: all)'
    )
    parser.add_argument(
        '--methods', default=','.join(METHODS), type=lambda s: [m for m in s.split(',') if m]
    )
    parser.add_argument(
        '--variants',
        default=','.join(audit_variants.VARIANTS),
        type=lambda s: [m for m in s.split(',') if m],
    )
    parser.add_argument(
        '--build_methods',
        action='store_true',
        help='anonymize here even where <orig>_<method> exists',
    )
    parser.add_argument('--identity_min_px', type=int, default=audit.DEFAULT_IDENTITY_MIN_PX)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--json', help="write every copy's summary here")
    args = parser.parse_args(argv)
    if not _has_split(args.orig, args.split):
        parser.error(
            f'{args.orig} has no {args.split} split; make it with python '
            'tools/make_synthetic_wider.py --out cache/synthetic_wider --train 1000 '
            '--val 300 --seed 0 --crops 128'
        )
    options = audit.AuditOptions(identity_min_px=args.identity_min_px)
    results = []
    for label, folder, how in copies(args):
        start = time.perf_counter()
        result = audit.audit(
            args.orig,
            folder,
            args.split,
            options,
            workers=args.workers,
            progress=False,
            max_images=args.max_images,
            method=label,
        )
        print(
            f'{label}: {folder} ({how}), {result.summary["images"]} images, '
            f'{time.perf_counter() - start:.0f} s',
            flush=True,
        )
        results.append((label, result.summary['all']))
    print(table(results))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(dict(results), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
