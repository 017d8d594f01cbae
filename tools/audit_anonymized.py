"""Audits an anonymized WIDER-layout copy for faces left unchanged (leaks) and re-identifiable.

  python tools/audit_anonymized.py --orig data/widerface --anon data/widerface_blur
  python tools/audit_anonymized.py --orig ORIG --anon ANON --split val --json audit.json \\
      --workers 8 --min_face_px 10

For every annotated face at least `--min_face_px` wide (default 10, the paper's smallest
anonymized face): the share of pixels whose luma changed by more than `--tol` (default 4, above
the noise of the JPEG q95 re-encode) and the mean absolute change inside the box; for faces at
least `--identity_min_px` (default 40) wide and high, the dlib face-recognition distance between
original and anonymized face (aligned with the original's landmarks) and whether it still
matches (< 0.6). Details: `safefakes_jax/anonymizers/audit.py`.

Exit status: 1 when any audited face is left unchanged (changed share < `--min_changed`,
default 0.5) or cannot be compared; those faces are listed. 0 otherwise (images missing from the
copy are listed but only fail with `--fail_on_missing`). 2 on bad input (missing folder or
annotation file, malformed txt), with a message naming the path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.anonymizers import audit  # noqa: E402
from safefakes_jax.data import atomic_io, wider  # noqa: E402


def _fmt(value: float | None, spec: str = '.3f') -> str:
    return '-' if value is None else format(value, spec)


def format_report(result: audit.AuditResult, max_list: int = 200) -> str:
    """The human-readable report: per-method summary, then leaks, unverified faces and missing
    images (each list cut at `max_list` lines; `--json` has them all)."""
    s = result.summary
    lines = [f'leak audit of {s["anon"]} against {s["orig"]} ({s["split"]}): {s["images"]} '
             f'images, {s["all"]["faces_annotated"]} faces in {s["seconds"]:.1f} s '
             f'({_fmt(s["faces_per_second"], ".1f")} faces/s; identity '
             f'{_fmt(s["identity_faces_per_cpu_second"], ".2f")} faces per CPU-second)']
    for m, t in s['methods'].items():
        lines.append(
            f'  {m}: {t["faces_audited"]} faces audited, leak rate '
            f'{_fmt(t["leak_rate"], ".4f")} ({t["leaks"]} leaks), mean changed share '
            f'{_fmt(t["mean_changed_share"])}, mean |delta| {_fmt(t["mean_abs_change"], ".1f")}; '
            f'identity: {t["identity_faces"]} faces, match rate '
            f'{_fmt(t["identity_match_rate"], ".4f")}, mean distance '
            f'{_fmt(t["mean_identity_distance"])}; not audited: {t["faces_below_min_face_px"]} '
            f'small, {t["faces_empty_or_outside"]} empty; {t["faces_missing"]} missing, '
            f'{t["faces_unverified"]} unverified')
        if 'manifest' in t:
            mf = t['manifest']
            reasons = ', '.join(f'{k} {v}' for k, v in mf['records'].items() if k != 'anonymized')
            lines.append(f'    manifest: {mf["anonymized"]} anonymized, {mf["skipped"]} skipped, '
                         f'{mf["fallback"]} fallback, {mf["failed_images"]} failed images'
                         + (f' ({reasons})' if reasons else ''))
    for w in result.warnings:
        lines.append(f'WARNING: {w}')

    def listing(title: str, items: Sequence[str]) -> None:
        if items:
            lines.append(f'{title} ({len(items)}):')
            lines.extend(f'  {x}' for x in items[:max_list])
            if len(items) > max_list:
                lines.append(f'  ... and {len(items) - max_list} more (all in --json)')

    listing('LEAK: faces left unchanged (image, face, box x y w h, changed share)',
            [f'{r.image} face {r.face} box {" ".join(map(str, r.box))} changed '
             f'{r.changed_share:.3f}' + (f' [{r.record}]' if r.record else '')
             for r in result.leaks])
    listing('UNVERIFIED faces (could not be compared)',
            [f'{r.image} face {r.face} box {" ".join(map(str, r.box))}: {r.status}'
             for r in result.unverified])
    listing('MISSING images (their faces are not counted as safe)',
            [f'{name}: {reason}' for name, reason in result.missing_images])
    verdict = ('FAIL' if result.exit_status else 'OK')
    lines.append(f'{verdict}: {len(result.leaks)} leaks, {len(result.unverified)} unverified, '
                 f'{len(result.missing_images)} missing images')
    return '\n'.join(lines)


def to_json(result: audit.AuditResult) -> dict[str, Any]:
    """The summary plus one dict per face row (`faces`) and the missing images."""
    return result.summary | {
        'missing_images': [{'image': n, 'reason': r} for n, r in result.missing_images],
        'faces': [dataclasses.asdict(r) for r in result.rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--orig', required=True, help='original WIDER-layout folder')
    parser.add_argument('--anon', required=True, help='anonymized WIDER-layout copy')
    parser.add_argument('--split', default='train', choices=wider.SPLITS)
    parser.add_argument('--json', help='write the summary and per-face rows here')
    parser.add_argument('--min_face_px', type=int, default=audit.DEFAULT_MIN_FACE_PX,
                        help='audit faces at least this wide (default %(default)s)')
    parser.add_argument('--identity_min_px', type=int, default=audit.DEFAULT_IDENTITY_MIN_PX,
                        help='identity distance for faces at least this wide and high; 0 = '
                        'none (default %(default)s)')
    parser.add_argument('--tol', type=float, default=audit.DEFAULT_TOL,
                        help='a pixel changed when |delta luma| > tol (default %(default)s)')
    parser.add_argument('--min_changed', type=float, default=audit.DEFAULT_MIN_CHANGED,
                        help='a face with a smaller changed share is a leak (default '
                        '%(default)s)')
    parser.add_argument('--workers', type=int, default=0,
                        help='processes; 0 = all cores, 1 = in this process (default 0)')
    parser.add_argument('--method', help='method label (default: the manifest\'s method)')
    parser.add_argument('--fail_on_missing', action='store_true',
                        help='exit 1 also when images are missing from the copy')
    parser.add_argument('--max_list', type=int, default=200,
                        help='list at most this many leaks / missing images (default '
                        '%(default)s; --json has all)')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_changed <= 1.0:
        parser.error(f'--min_changed must be in [0, 1], got {args.min_changed}')
    if args.min_face_px < 1 or args.identity_min_px < 0 or args.tol < 0:
        parser.error('--min_face_px must be >= 1, --identity_min_px and --tol >= 0')
    options = audit.AuditOptions(min_face_px=args.min_face_px,
                                 identity_min_px=args.identity_min_px, tol=args.tol,
                                 min_changed=args.min_changed)
    try:
        result = audit.audit(args.orig, args.anon, args.split, options, workers=args.workers,
                             method=args.method, fail_on_missing=args.fail_on_missing,
                             progress=not args.no_progress)
    except (OSError, ValueError) as e:  # AuditInputError and FormatError name the path.
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_report(result, max_list=args.max_list))
    if args.json:
        atomic_io.write_text(args.json, json.dumps(to_json(result), indent=1) + '\n')
        print(f'wrote {args.json}')
    return result.exit_status


if __name__ == '__main__':
    sys.exit(main())
