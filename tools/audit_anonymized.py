"""Audits an anonymized WIDER-layout copy for leaking faces: unchanged, near-copied, recognizable.

  python tools/audit_anonymized.py --orig data/widerface --anon data/widerface_blur
  python tools/audit_anonymized.py --orig ORIG --anon ANON --split val --json audit.json \\
      --workers 8 --min_face_px 10

For every annotated face at least `--min_face_px` wide (default 10, the paper's smallest
anonymized face): the share of pixels whose luma changed by more than `--tol` (default 4, above
the noise of the JPEG q95 re-encode), the mean absolute change and a near-copy score
(structure-weighted SSIM of the luma, best half-size sub-window) inside the box; for faces at
least `--identity_min_px` (default 40) wide and high, the dlib identity verdict, measured only
where dlib's face detector finds the original face: match (distance < 0.6, aligned with the
original's landmarks, and nearer its own original than every other original of the split),
no match, or no face found in the anonymized crop. A face is a leak when
any rule fires: `unchanged_pixels` (changed share < `--min_changed`, default 0.5), `near_copy`
(score >= `--near_copy`, default 0.95) or `identity_match`; the rules that fired are listed per
face and counted per method. Details: `safefakes_jax/anonymizers/audit.py`.

Exit status: 1 when any audited face leaks or cannot be compared; those faces are listed. 0
otherwise (images missing from the copy are listed but only fail with `--fail_on_missing`). 2
on bad input, with a message naming the path (and line): a missing folder or annotation file, a
malformed txt, a name in a txt or the manifest that escapes its folder (`..`, absolute, a
symlink out of it), two names the audit would match with one image (`a.jpg` and `a.png`).
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


def _identity(row: audit.FaceRow) -> str:
    if row.identity_status is None:
        return '-'
    if row.identity_distance is None:
        return row.identity_status
    return f'{row.identity_status} {row.identity_distance:.3f} rank {row.identity_rank}'


def format_report(result: audit.AuditResult, max_list: int = 200) -> str:
    """The human-readable report: per-method summary, then leaks, unverified faces and missing
    images (each list cut at `max_list` lines; `--json` has them all)."""
    s = result.summary
    lines = [
        f'leak audit of {s["anon"]} against {s["orig"]} ({s["split"]}): {s["images"]} '
        f'images, {s["all"]["faces_annotated"]} faces in {s["seconds"]:.1f} s '
        f'({_fmt(s["faces_per_second"], ".1f")} faces/s; identity '
        f'{_fmt(s["identity_faces_per_cpu_second"], ".2f")} faces per CPU-second)'
    ]
    for m, t in s['methods'].items():
        rules = ', '.join(f'{k} {v}' for k, v in t['leaks_by_rule'].items())
        lines.append(
            f'  {m}: {t["faces_audited"]} faces audited, leak rate '
            f'{_fmt(t["leak_rate"], ".4f")} ({t["leaks"]} leaks), by rule: {rules}; mean changed '
            f'share {_fmt(t["mean_changed_share"])}, mean |delta| '
            f'{_fmt(t["mean_abs_change"], ".1f")}, mean near-copy score '
            f'{_fmt(t["mean_near_copy_score"])}; identity: '
            f'{t["identity_faces"]} faces measured, match rate '
            f'{_fmt(t["identity_match_rate"], ".4f")} ({t["identity_matches"]} match, '
            f'{t["identity_no_match"]} no match, {t["identity_no_face_found"]} no face found; '
            f'{t["identity_within_threshold"]} within the distance threshold; '
            f'{_fmt(t["identity_matches_by_chance"], ".2f")} matches expected by chance), '
            f'mean distance {_fmt(t["mean_identity_distance"])}, '
            f'{t["identity_no_face_in_original"]} not measurable (no face detected in the '
            f'original); not audited: {t["faces_below_min_face_px"]} small, '
            f'{t["faces_empty_or_outside"]} empty; {t["faces_missing"]} missing, '
            f'{t["faces_unverified"]} unverified'
        )
        if 'manifest' in t:
            mf = t['manifest']
            reasons = ', '.join(f'{k} {v}' for k, v in mf['records'].items() if k != 'anonymized')
            lines.append(
                f'    manifest: {mf["anonymized"]} anonymized, {mf["skipped"]} skipped, '
                f'{mf["fallback"]} fallback, {mf["failed_images"]} failed images'
                + (f' ({reasons})' if reasons else '')
            )
    for w in result.warnings:
        lines.append(f'WARNING: {w}')

    def listing(title: str, items: Sequence[str]) -> None:
        if items:
            lines.append(f'{title} ({len(items)}):')
            lines.extend(f'  {x}' for x in items[:max_list])
            if len(items) > max_list:
                lines.append(f'  ... and {len(items) - max_list} more (all in --json)')

    listing(
        'LEAK: faces not anonymized (image, face, box x y w h, changed share, near-copy '
        'score, identity; rules that fired)',
        [
            f'{r.image} face {r.face} box {" ".join(map(str, r.box))} changed '
            f'{r.changed_share:.3f} near-copy {r.near_copy_score:.3f} identity '
            f'{_identity(r)}: {", ".join(r.leak_rules)}' + (f' [{r.record}]' if r.record else '')
            for r in result.leaks
        ],
    )
    listing(
        'UNVERIFIED faces (could not be compared)',
        [
            f'{r.image} face {r.face} box {" ".join(map(str, r.box))}: {r.status}'
            for r in result.unverified
        ],
    )
    listing(
        'MISSING images (their faces are not counted as safe)',
        [f'{name}: {reason}' for name, reason in result.missing_images],
    )
    verdict = 'FAIL' if result.exit_status else 'OK'
    lines.append(
        f'{verdict}: {len(result.leaks)} leaks, {len(result.unverified)} unverified, '
        f'{len(result.missing_images)} missing images'
    )
    return '\n'.join(lines)


def to_json(result: audit.AuditResult) -> dict[str, Any]:
    """The summary plus one dict per face row (`faces`) and the missing images."""
    return result.summary | {
        'missing_images': [{'image': n, 'reason': r} for n, r in result.missing_images],
        'faces': [dataclasses.asdict(r) for r in result.rows],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--orig', required=True, help='original WIDER-layout folder')
    parser.add_argument('--anon', required=True, help='anonymized WIDER-layout copy')
    parser.add_argument('--split', default='train', choices=wider.SPLITS)
    parser.add_argument('--json', help='write the summary and per-face rows here')
    parser.add_argument(
        '--min_face_px',
        type=int,
        default=audit.DEFAULT_MIN_FACE_PX,
        help='audit faces at least this wide (default %(default)s)',
    )
    parser.add_argument(
        '--identity_min_px',
        type=int,
        default=audit.DEFAULT_IDENTITY_MIN_PX,
        help='identity distance for faces at least this wide and high; 0 = '
        'none (default %(default)s)',
    )
    parser.add_argument(
        '--tol',
        type=float,
        default=audit.DEFAULT_TOL,
        help='a pixel changed when |delta luma| > tol (default %(default)s)',
    )
    parser.add_argument(
        '--min_changed',
        type=float,
        default=audit.DEFAULT_MIN_CHANGED,
        help='a face with a smaller changed share is a leak (default %(default)s)',
    )
    parser.add_argument(
        '--near_copy',
        type=float,
        default=audit.NEAR_COPY_THRESHOLD,
        help='a face whose near-copy score is at least this is a leak; > 1 '
        'disables the rule (default %(default)s)',
    )
    parser.add_argument(
        '--face_min_score',
        type=float,
        default=audit.ORIGINAL_MIN_SCORE,
        help='dlib HOG score an original face needs for its identity to be '
        'measured (default %(default)s)',
    )
    parser.add_argument(
        '--anon_face_min_score',
        type=float,
        default=audit.ANONYMIZED_MIN_SCORE,
        help='dlib HOG score below which the anonymized crop shows no face (default %(default)s)',
    )
    parser.add_argument(
        '--max_images',
        type=int,
        default=None,
        help="audit only the first N images of the original's txt (a quick check; default all)",
    )
    parser.add_argument(
        '--workers',
        type=int,
        default=0,
        help='processes; 0 = all cores, 1 = in this process (default 0)',
    )
    parser.add_argument('--method', help="method label (default: the manifest's method)")
    parser.add_argument(
        '--fail_on_missing',
        action='store_true',
        help='exit 1 also when images are missing from the copy',
    )
    parser.add_argument(
        '--max_list',
        type=int,
        default=200,
        help='list at most this many leaks / missing images (default %(default)s; --json has all)',
    )
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_changed <= 1.0:
        parser.error(f'--min_changed must be in [0, 1], got {args.min_changed}')
    if args.min_face_px < 1 or args.identity_min_px < 0 or args.tol < 0:
        parser.error('--min_face_px must be >= 1, --identity_min_px and --tol >= 0')
    if args.max_images is not None and args.max_images < 1:
        parser.error(f'--max_images must be >= 1, got {args.max_images}')
    options = audit.AuditOptions(
        min_face_px=args.min_face_px,
        identity_min_px=args.identity_min_px,
        tol=args.tol,
        min_changed=args.min_changed,
        near_copy=args.near_copy,
        original_min_score=args.face_min_score,
        anonymized_min_score=args.anon_face_min_score,
    )
    try:
        result = audit.audit(
            args.orig,
            args.anon,
            args.split,
            options,
            workers=args.workers,
            method=args.method,
            fail_on_missing=args.fail_on_missing,
            progress=not args.no_progress,
            max_images=args.max_images,
        )
    except (OSError, ValueError) as e:  # Input errors name the path (and line).
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_report(result, max_list=args.max_list))
    if args.json:
        atomic_io.write_text(args.json, json.dumps(to_json(result), indent=1) + '\n')
        print(f'wrote {args.json}')
    return result.exit_status


if __name__ == '__main__':
    sys.exit(main())
