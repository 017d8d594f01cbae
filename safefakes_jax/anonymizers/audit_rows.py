"""The leak audit's per-face rows (`FaceRow`), their statuses and rules, and their summaries
(totals, leak rates per rule, identity verdicts, manifest record counts). What the statuses and
rules mean: `audit`'s docstring.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# Face statuses. Only AUDITED faces enter the leak rate; the others are counted apart.
AUDITED = 'audited'
EMPTY = 'not_audited:empty_box'
OUTSIDE = 'not_audited:outside_image'
SMALL = 'not_audited:below_min_face_px'
MISSING = 'missing'
UNVERIFIED = 'unverified'  # Followed by ':<reason>'.

# Leak rules, in the order they are listed.
UNCHANGED_PIXELS = 'unchanged_pixels'
NEAR_COPY = 'near_copy'
IDENTITY_MATCH = 'identity_match'
RULES = (UNCHANGED_PIXELS, NEAR_COPY, IDENTITY_MATCH)
MATCH_THRESHOLD = 0.6  # dlib's same-person distance (identity.MATCH_THRESHOLD; no dlib here).


@dataclasses.dataclass
class FaceRow:
    """The audit of one annotated face.

    Attributes:
      image: the original's name as in its txt (`event/name.jpg`).
      output: the anonymized image's name, None when it is missing.
      face: row of the box in the image's annotation.
      box: the annotated `x y w h`.
      method: the anonymization method (manifest, `--method` or config).
      status: `audited`, `not_audited:<reason>`, `missing` or `unverified:<reason>`.
      changed_share: share of box pixels whose luma changed by more than `tol`.
      mean_abs_change: mean |delta| over the box's pixels and RGB channels.
      near_copy_score: structure-weighted SSIM against the original (`audit_measures`).
      identity_status: `match`, `no_match`, `no_face_found`, `no_face_in_original`; None when
        not measured (small face, identity off).
      identity_distance: dlib descriptor distance original vs anonymized (both faces found).
      identity_rank: rank of the face's own original among the gallery of the split's
        originals, nearest first (1: re-identified when also within the distance threshold).
      identity_match: True / False where identity was measured (None otherwise).
      face_score_original: HOG score of the original's face (None: none above the gate).
      face_score_anonymized: HOG score of the anonymized face.
      leak_rules: the rules that fired (`RULES` order).
      leak: audited and at least one rule fired.
      record: the manifest's record for this face, if there is a manifest.
    """

    image: str
    output: str | None
    face: int
    box: list[int]
    method: str
    status: str
    changed_share: float | None = None
    mean_abs_change: float | None = None
    near_copy_score: float | None = None
    identity_status: str | None = None
    identity_distance: float | None = None
    identity_rank: int | None = None
    identity_match: bool | None = None
    face_score_original: float | None = None
    face_score_anonymized: float | None = None
    leak_rules: list[str] = dataclasses.field(default_factory=list)
    leak: bool = False
    record: str | None = None


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else None


def _rate(n: int, total: int) -> float | None:
    return round(n / total, 6) if total else None


def summarize_rows(rows: Sequence[FaceRow], gallery: int = 0) -> dict[str, Any]:
    """Totals over `rows`: faces per status, leak rate (leaks / audited faces) and leaks per
    rule (a face may fire several), mean changed share, mean absolute change and mean near-copy
    score of the audited faces, and the identity verdicts: `identity_faces` are the faces whose
    original face was detectable (measured), `identity_match_rate` = matches / those, with the
    `no_face_found` ones counted as not matching and listed apart, `identity_within_threshold`
    the faces within the distance threshold whatever their rank; faces whose original was not
    detectable are `identity_no_face_in_original`; `identity_matches_by_chance` = faces found
    in both / `gallery` (the rank-1 matches of faces that kept no identity; None without a
    gallery)."""
    status = collections.Counter(
        r.status.split(':')[0] if r.status.startswith(UNVERIFIED) else r.status for r in rows
    )
    audited = [r for r in rows if r.status == AUDITED]
    verdicts = collections.Counter(r.identity_status for r in audited if r.identity_status)
    measured = verdicts['match'] + verdicts['no_match'] + verdicts['no_face_found']
    leaks = sum(r.leak for r in audited)
    per_rule = {rule: sum(rule in r.leak_rules for r in audited) for rule in RULES}
    return {
        'faces_annotated': len(rows),
        'faces_audited': len(audited),
        'faces_below_min_face_px': status[SMALL],
        'faces_empty_or_outside': status[EMPTY] + status[OUTSIDE],
        'faces_missing': status[MISSING],
        'faces_unverified': status[UNVERIFIED],
        'leaks': leaks,
        'leak_rate': _rate(leaks, len(audited)),
        'leaks_by_rule': per_rule,
        'leak_rate_by_rule': {rule: _rate(n, len(audited)) for rule, n in per_rule.items()},
        'mean_changed_share': _mean(r.changed_share for r in audited),
        'mean_abs_change': _mean(r.mean_abs_change for r in audited),
        'mean_near_copy_score': _mean(r.near_copy_score for r in audited),
        'identity_faces': measured,
        'identity_matches': verdicts['match'],
        'identity_match_rate': _rate(verdicts['match'], measured),
        'identity_no_match': verdicts['no_match'],
        'identity_within_threshold': sum(
            r.identity_distance is not None and r.identity_distance < MATCH_THRESHOLD
            for r in audited
        ),
        'identity_matches_by_chance': (
            round((verdicts['match'] + verdicts['no_match']) / gallery, 3) if gallery else None
        ),
        'identity_no_face_found': verdicts['no_face_found'],
        'identity_no_face_in_original': verdicts['no_face_in_original'],
        'mean_identity_distance': _mean(
            r.identity_distance for r in audited if r.identity_distance is not None
        ),
    }


def summarize_manifest(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of the manifest's face records (`anonymized`, `skipped`, `fallback`, and each full
    record) and of its failed images."""
    records: collections.Counter = collections.Counter()
    failed = 0
    for entry in entries:
        failed += entry.get('status', 'ok') != 'ok'
        records.update(str(r) for r in entry.get('faces') or [])
    kinds = collections.Counter(r.split(':')[0] for r in records.elements())
    return {
        'anonymized': kinds['anonymized'],
        'skipped': kinds['skipped'],
        'fallback': kinds['fallback'],
        'failed_images': failed,
        'records': dict(sorted(records.items())),
    }
