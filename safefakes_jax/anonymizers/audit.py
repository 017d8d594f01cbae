"""Leak audit of an anonymized WIDER-layout copy against its original.

For every annotated face of at least `min_face_px` wide (default 10, the paper's smallest
anonymized face) the audit compares the anonymized image with the original inside the box
(columns x .. x+w-1, rows y .. y+h-1, clipped to the image) and reports

* `changed_share`: the share of pixels whose luma changed by more than `tol`;
* `mean_abs_change`: the mean absolute change over the box's pixels and RGB channels (0..255);
* `near_copy_score`: structure-weighted SSIM of the box's luma, best half-size sub-window
  (`audit_measures`; 1 = the original's structure is all there);
* for faces at least `identity_min_px` wide and high (default 40): the gated dlib identity
  verdict (`identity.IdentityModel.check`): `match`, `no_match`, `no_face_found` (the
  anonymized crop shows the face detector no face) or `no_face_in_original` (the original's
  face is not detectable, identity not measured), with the descriptor distance when both faces
  were found.

A face is a *leak* when any of three rules fires (all that fire are listed in `leak_rules`):

* `unchanged_pixels`: `changed_share < min_changed` (default 0.5): left (essentially) as it was;
* `near_copy`: `near_copy_score >= near_copy` (default 0.95): every pixel may have moved, but the
  original's structure is intact (a brightness or contrast shift, added noise, a blacked-out
  outer ring around an intact centre);
* `identity_match`: the anonymized face is still recognized as the original's person: within
  dlib's same-person distance (0.6) of its original *and* nearer its own original than every
  other original face whose identity was measured in the audited split (rank 1 in that
  gallery; `identity` docstring: on faces dlib cannot tell apart, such as the synthetic set's,
  the distance alone matches most pairs of different people). A face that kept nothing of its
  original still lands at rank 1 with probability ~1/G in a gallery of G, so each method's
  summary gives `identity_matches_by_chance` (its faces found in both / G): the matches an
  anonymizer that removes all identity would still be flagged for. The rule fails closed: such
  a face is a leak all the same, as an attacker with that gallery would pick its original.

Each rule alone misses leaks the others catch: brightening by 6 grey levels or adding +-6 noise
changes most pixels by more than `tol` (today's rule passes them) yet keeps both the structure
and the identity; a 25 x 25 blur of a large face changes every pixel and lowers SSIM, yet the
face may still be recognized; identity is measured on faces >= 40 px only, and only where the
original face is detectable (70% of the synthetic set's large faces), so the pixel rules carry
the small ones. Calibration figures: `audit_measures` and `identity` docstrings,
`benchmarks/audit_calibration.py`.

Why luma and why `tol = 4`. Output JPEGs are re-encoded (quality 95), so untouched pixels differ
by coding noise. Most of that noise is in chroma: 4:2:0 subsampling smears saturated colour
edges, and the max-channel |delta| of an untouched face exceeds 8 on up to 52% of its pixels
(synthetic cartoon faces, q90 source, re-encoded at q95). Luma (BT.601, the Y that JPEG codes at
full resolution) is near-lossless at q95, and it is where identity lives: a change of colour only
leaves a face recognizable. Measured q95 re-encode noise in luma: 99.9th percentile 1.7
(synthetic set, q90 JPEG source), 1.6-4.3 (skimage astronaut / chelsea / coffee / rocket decoded
from q75 or q90 JPEGs, like WIDER's), 4.2-6.4 (the same from lossless sources); per face
(206 synthetic faces >= 10 px) at most 1.3% of pixels above 4. A re-encoded, untouched face is
therefore unchanged with a wide margin (1.3% vs the 50% bar), while blacking out, pixelation
(10 x 10 cells) and a 25 x 25 blur change most pixels of textured faces. PNG output (lossless)
has no noise at all. Re-encoding at a quality well below the source's adds more noise (q85 of a
q90 source: up to 45% of a face's pixels above 4): raise `tol` for such copies.

Failures never pass silently: a face whose anonymized image is missing (a failed image) is
`missing`; one whose images cannot be compared (unreadable, different size, original missing)
is `unverified`. Missing faces are listed (a missing image leaks nothing); unverified faces,
like leaks, make `exit_status` 1. Bad input is refused before anything is compared
(`data.face_pairs`, the pairing the image metrics use too): a name in a txt or in the
manifest that escapes its folder (`..`, an absolute path, a symlink out of it) and two names
that would be matched with the same image.

With `anonymization_manifest.jsonl` in the copy, each face row carries its record
(`anonymized`, `skipped:<reason>`, `fallback:<reason>`), the summary groups faces by the
manifest's `method` and counts the records per kind.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import time
from typing import Any

import cv2
import numpy as np

from safefakes_jax.anonymizers.audit_measures import (  # noqa: F401 (re-exported)
    DEFAULT_TOL,
    NEAR_COPY_THRESHOLD,
    clip_box,
    near_copy_score,
    pixel_change,
    read_rgb,
)
from safefakes_jax.anonymizers.audit_rows import (  # noqa: F401 (re-exported)
    AUDITED,
    EMPTY,
    IDENTITY_MATCH,
    MATCH_THRESHOLD,
    MISSING,
    NEAR_COPY,
    OUTSIDE,
    SMALL,
    UNCHANGED_PIXELS,
    UNVERIFIED,
    FaceRow,
    summarize_manifest,
    summarize_rows,
)
from safefakes_jax.data import face_pairs
from safefakes_jax.data.face_pairs import _key
from safefakes_jax.data.manifest import MANIFEST  # noqa: F401 (re-exported)

DEFAULT_MIN_CHANGED = 0.5
DEFAULT_MIN_FACE_PX = 10
DEFAULT_IDENTITY_MIN_PX = 40
ORIGINAL_MIN_SCORE = -0.5  # identity.ORIGINAL_MIN_SCORE (dlib loads only when needed).
ANONYMIZED_MIN_SCORE = -1.0  # identity.ANONYMIZED_MIN_SCORE.


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the audit (module docstring).

    Attributes:
      min_face_px: faces narrower than this are not audited.
      identity_min_px: faces at least this wide and high get the identity verdict; 0 = none.
      tol: a pixel has changed when its luma differs by more than this (0..255 scale).
      min_changed: a face with a smaller share of changed pixels is a leak.
      near_copy: a face whose `near_copy_score` is at least this is a leak; > 1 disables.
      original_min_score: HOG score an original face needs for identity to be measured.
      anonymized_min_score: HOG score below which the anonymized crop shows no face.
    """

    min_face_px: int = DEFAULT_MIN_FACE_PX
    identity_min_px: int = DEFAULT_IDENTITY_MIN_PX
    tol: float = DEFAULT_TOL
    min_changed: float = DEFAULT_MIN_CHANGED
    near_copy: float = NEAR_COPY_THRESHOLD
    original_min_score: float = ORIGINAL_MIN_SCORE
    anonymized_min_score: float = ANONYMIZED_MIN_SCORE


@dataclasses.dataclass
class AuditResult:
    """Everything the audit found.

    Attributes:
      rows: one `FaceRow` per annotated face, in annotation order.
      summary: JSON-ready totals, overall and per method (`summarize_rows`, `summarize_manifest`).
      leaks: the rows with `leak` set.
      missing_images: (original name, reason) of images absent from the copy.
      unverified: the rows that could not be compared.
      warnings: notes about the input (annotation mismatches, low JPEG quality, ...).
      exit_status: 1 when there is a leak or an unverified face (or a missing image with
        `fail_on_missing`), else 0.
    """

    rows: list[FaceRow]
    summary: dict[str, Any]
    leaks: list[FaceRow]
    missing_images: list[tuple[str, str]]
    unverified: list[FaceRow]
    warnings: list[str]
    exit_status: int


# --------------------------------------------------------------------------- per image


Descriptors = dict[int, tuple[Any, Any]]  # Face row -> (original, anonymized or None) [128].


def _audit_image(
    task: face_pairs.ImagePair, options: AuditOptions
) -> tuple[list[FaceRow], float, int, Descriptors]:
    """Rows of one image (identity not yet ranked, rules not yet judged: `_reidentify`,
    `_judge`), the seconds spent in the identity model, its face count and the descriptors of
    the faces whose original was detected."""
    rows = [
        FaceRow(
            task.name, task.anon_name, i, list(box), task.method, AUDITED, record=task.records[i]
        )
        for i, box in enumerate(task.boxes)
    ]
    for row in rows:
        if row.box[2] <= 0 or row.box[3] <= 0:
            row.status = EMPTY
        elif row.box[2] < options.min_face_px:
            row.status = SMALL
    candidates = [r for r in rows if r.status == AUDITED]
    if not candidates:
        return rows, 0.0, 0, {}

    def mark(status: str) -> tuple[list[FaceRow], float, int, Descriptors]:
        for r in candidates:
            r.status = status
        return rows, 0.0, 0, {}

    if task.anon_path is None:
        return mark(MISSING)
    original = read_rgb(task.orig_path)
    if original is None:
        return mark(f'{UNVERIFIED}:original_unreadable')
    anonymized = read_rgb(task.anon_path)
    if anonymized is None:
        return mark(f'{UNVERIFIED}:anonymized_unreadable')
    if anonymized.shape != original.shape:
        (h0, w0), (h1, w1) = original.shape[:2], anonymized.shape[:2]
        return mark(f'{UNVERIFIED}:size_{w1}x{h1}_vs_original_{w0}x{h0}')
    for r in candidates:
        change = pixel_change(original, anonymized, r.box, options.tol)
        if change is None:
            r.status = OUTSIDE
            continue
        r.changed_share, r.mean_abs_change = change
        r.near_copy_score = near_copy_score(original, anonymized, r.box)
    large = [
        r
        for r in candidates
        if r.status == AUDITED
        and options.identity_min_px > 0
        and min(r.box[2], r.box[3]) >= options.identity_min_px
    ]
    seconds, descriptors = 0.0, {}
    if large:
        from safefakes_jax.anonymizers import identity  # dlib loads only when needed.

        start = time.perf_counter()
        checks = identity.load().check(
            original,
            anonymized,
            [r.box for r in large],
            options.original_min_score,
            options.anonymized_min_score,
        )
        seconds = time.perf_counter() - start
        for r, c in zip(large, checks, strict=True):
            r.identity_status, r.identity_distance, r.identity_match = (
                c.status,
                c.distance,
                c.match,
            )
            r.face_score_original, r.face_score_anonymized = (c.original_score, c.anonymized_score)
            if c.original_descriptor is not None:
                descriptors[r.face] = (c.original_descriptor, c.anonymized_descriptor)
    return rows, seconds, len(large), descriptors


def _reidentify(per_task: list[tuple[list[FaceRow], Descriptors]]) -> int:
    """Ranks every anonymized face found by the identity check against the gallery of all
    originals whose face was detected (`identity` docstring): a `match` stays one only at rank
    1, else it becomes `no_match`. Sets `identity_rank`; returns the gallery size."""
    gallery, queries, own, found = [], [], [], []
    for row_of, per_face in per_task:
        for face, (orig, anon) in per_face.items():
            if anon is not None:
                queries.append(anon)
                own.append(len(gallery))
                found.append(row_of[face])
            gallery.append(orig)
    if found:
        from safefakes_jax.anonymizers import identity

        ranks = identity.gallery_ranks(np.stack(queries), np.stack(gallery), np.asarray(own))
        for r, rank in zip(found, ranks, strict=True):
            r.identity_rank = int(rank)
            if r.identity_status == identity.MATCH and rank > 1:
                r.identity_status, r.identity_match = identity.NO_MATCH, False
    return len(gallery)


def _judge(rows: list[FaceRow], options: AuditOptions) -> None:
    """Sets the rules that fire (`leak_rules`) and `leak` on every audited face."""
    for r in rows:
        if r.status == AUDITED:
            r.leak_rules = [
                rule
                for rule, fired in (
                    (UNCHANGED_PIXELS, r.changed_share < options.min_changed),
                    (NEAR_COPY, r.near_copy_score >= options.near_copy),
                    (IDENTITY_MATCH, r.identity_status == 'match'),
                )
                if fired
            ]
            r.leak = bool(r.leak_rules)


_OPTIONS: AuditOptions | None = None


def _init_worker(options: AuditOptions) -> None:
    global _OPTIONS
    _OPTIONS = options
    cv2.setNumThreads(1)  # One image per process; threads would only contend.


def _work(task: face_pairs.ImagePair) -> tuple[list[FaceRow], float, int, Descriptors]:
    assert _OPTIONS is not None
    return _audit_image(task, _OPTIONS)


# --------------------------------------------------------------------------- driver


def audit(
    orig: str | os.PathLike,
    anon: str | os.PathLike,
    split: str = 'train',
    options: AuditOptions | None = None,
    workers: int = 1,
    method: str | None = None,
    fail_on_missing: bool = False,
    progress: bool = True,
    max_images: int | None = None,
) -> AuditResult:
    """Audits the anonymized copy `anon` of the WIDER-layout folder `orig` (module docstring).

    Args:
      orig: the original WIDER-layout folder.
      anon: the anonymized copy.
      split: 'train' or 'val'.
      options: thresholds; default `AuditOptions()`.
      workers: processes (0 = all cores, 1 = in this process). The result does not depend on it.
      method: label for every face, overriding the manifest's `method`.
      fail_on_missing: a missing image also makes `exit_status` 1.
      progress: show a tqdm progress bar.
      max_images: audit only the first this many images of the original's txt (all: None).
        The whole input is still checked.

    Returns:
      An `AuditResult`.

    Raises:
      face_pairs.PairInputError: a missing folder or annotation file (the message names the path).
      wider.FormatError: a malformed annotation file (names file and line).
      root_paths.PathEscapeError: a name in a txt or the manifest that is unsafe or resolves
        outside its folder (names file and line).
      face_pairs.NameCollisionError: two names matched with the same image (names both).
    """
    from tqdm import tqdm

    options = options or AuditOptions()
    start = time.perf_counter()
    orig, anon = os.fspath(orig), os.fspath(anon)
    pairing = face_pairs.pair_images(orig, anon, split, method)
    tasks, entries, warnings, counts = (
        pairing.pairs,
        pairing.manifest.entries,
        pairing.warnings,
        pairing.counts,
    )
    config = pairing.config
    if config.get('image_format', 'jpeg') == 'jpeg' and int(config.get('jpeg_quality', 95)) < 90:
        warnings.append(
            f'copy written at JPEG quality {config["jpeg_quality"]}: the luma '
            'tolerance was measured for quality 95; consider a larger --tol'
        )
    if max_images is not None:
        tasks = tasks[:max_images]
    workers = (os.cpu_count() or 1) if workers <= 0 else workers
    per_task: list[list[FaceRow]] = []
    descriptors: list[tuple[list[FaceRow], Descriptors]] = []
    id_seconds, id_faces = 0.0, 0
    bar = tqdm(total=len(tasks), desc='leak audit', unit='img', disable=not progress)

    def collect(result: tuple[list[FaceRow], float, int, Descriptors]) -> None:
        nonlocal id_seconds, id_faces
        per_task.append(result[0])
        if result[3]:
            descriptors.append((result[0], result[3]))
        id_seconds, id_faces = id_seconds + result[1], id_faces + result[2]
        bar.update()
        bar.set_postfix_str(f'{id_faces} identity faces', refresh=False)

    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            collect(_audit_image(task, options))
    else:
        # Spawn: the caller may hold threads (JAX, TF) that make fork unsafe. imap keeps order.
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(
            min(workers, len(tasks)), initializer=_init_worker, initargs=(options,)
        ) as pool:
            for result in pool.imap(_work, tasks, chunksize=1):
                collect(result)
    bar.close()
    gallery = _reidentify(descriptors)
    rows = [r for task_rows in per_task for r in task_rows]
    _judge(rows, options)
    seconds = time.perf_counter() - start

    missing: dict[str, str] = {}
    for task, task_rows in zip(tasks, per_task, strict=True):
        if any(r.status == MISSING for r in task_rows):
            entry = entries.get(_key(task.name)) or {}
            missing[task.name] = str(entry.get('status', 'not in the copy'))
    leaks = [r for r in rows if r.leak]
    unverified = [r for r in rows if r.status.startswith(UNVERIFIED)]
    exit_status = int(bool(leaks or unverified or (fail_on_missing and missing)))

    by_method: dict[str, list[FaceRow]] = collections.defaultdict(list)
    for r in rows:
        by_method[r.method].append(r)
    methods = {m: summarize_rows(rs, gallery) for m, rs in sorted(by_method.items())}
    if entries:
        task_method = {_key(t.name): t.method for t in tasks}
        grouped: dict[str, list[dict]] = collections.defaultdict(list)
        for key, entry in entries.items():
            if key in task_method:
                grouped[task_method[key]].append(entry)
        for m, es in grouped.items():
            methods.setdefault(m, summarize_rows([]))['manifest'] = summarize_manifest(es)
    summary = {
        'orig': orig,
        'anon': anon,
        'split': split,
        'options': dataclasses.asdict(options)
        | {
            'match_threshold': MATCH_THRESHOLD,
            'identity_gallery': gallery,
            'change_measure': 'abs delta luma (BT.601)',
            'max_images': max_images,
        },
        'images': len(tasks),
        'images_missing': len(missing),
        'manifest': bool(entries),
        'methods': methods,
        'all': summarize_rows(rows, gallery),
        'input_counts': counts,
        'warnings': warnings,
        'seconds': round(seconds, 3),
        'faces_per_second': round(len(rows) / seconds, 2) if seconds > 0 else None,
        'identity_seconds': round(id_seconds, 3),
        'identity_faces_per_cpu_second': (
            round(id_faces / id_seconds, 2) if id_seconds > 0 else None
        ),
        'exit_status': exit_status,
    }
    return AuditResult(
        rows, summary, leaks, sorted(missing.items()), unverified, warnings, exit_status
    )
