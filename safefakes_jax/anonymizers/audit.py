"""Leak audit of an anonymized WIDER-layout copy against its original.

For every annotated face of at least `min_face_px` wide (default 10, the paper's smallest
anonymized face) the audit compares the anonymized image with the original inside the box
(columns x .. x+w-1, rows y .. y+h-1, clipped to the image) and reports

* `changed_share`: the share of pixels whose luma changed by more than `tol`;
* `mean_abs_change`: the mean absolute change over the box's pixels and RGB channels (0..255);
* for faces at least `identity_min_px` wide and high (default 40): the dlib face-recognition
  distance between the original and the anonymized face, both aligned with the original's
  5-point landmarks (`identity`), and whether it is still a match (distance < 0.6).

A face with `changed_share < min_changed` (default 0.5) is a *leak*: it was left (essentially)
unchanged. The pixel-change test is what the exit status rests on; the identity distance is a
second, softer measure (a mild blur changes every pixel yet may still match).

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
like leaks, make `exit_status` 1.

With `anonymization_manifest.jsonl` in the copy, each face row carries its record
(`anonymized`, `skipped:<reason>`, `fallback:<reason>`), the summary groups faces by the
manifest's `method` and counts the records per kind.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from safefakes_jax.data import wider

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, RGB order.
DEFAULT_TOL = 4.0
DEFAULT_MIN_CHANGED = 0.5
DEFAULT_MIN_FACE_PX = 10
DEFAULT_IDENTITY_MIN_PX = 40
MATCH_THRESHOLD = 0.6  # dlib's same-person threshold (identity.MATCH_THRESHOLD).
MANIFEST = 'anonymization_manifest.jsonl'
CONFIG_FILE = 'anonymization_config.json'
PARTIAL = '.anonymization_manifest.partial.jsonl'  # Present while a run is unfinished.

# Face statuses. Only AUDITED faces enter the leak rate; the others are counted apart.
AUDITED = 'audited'
EMPTY = 'not_audited:empty_box'
OUTSIDE = 'not_audited:outside_image'
SMALL = 'not_audited:below_min_face_px'
MISSING = 'missing'
UNVERIFIED = 'unverified'  # Followed by ':<reason>'.


class AuditInputError(FileNotFoundError):
    """Bad input: a missing folder or file; the message names the path."""


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the audit (module docstring).

    Attributes:
      min_face_px: faces narrower than this are not audited.
      identity_min_px: faces at least this wide and high get the identity distance; 0 = none.
      tol: a pixel has changed when its luma differs by more than this (0..255 scale).
      min_changed: a face with a smaller share of changed pixels is a leak.
    """

    min_face_px: int = DEFAULT_MIN_FACE_PX
    identity_min_px: int = DEFAULT_IDENTITY_MIN_PX
    tol: float = DEFAULT_TOL
    min_changed: float = DEFAULT_MIN_CHANGED


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
      identity_distance: dlib descriptor distance original vs anonymized (large faces only).
      identity_match: identity_distance < 0.6.
      leak: audited and changed_share < min_changed.
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
    identity_distance: float | None = None
    identity_match: bool | None = None
    leak: bool = False
    record: str | None = None


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


@dataclasses.dataclass(frozen=True)
class _Task:
    name: str
    orig_path: str
    anon_name: str | None
    anon_path: str | None
    boxes: tuple[tuple[int, int, int, int], ...]
    method: str
    records: tuple[str | None, ...]


# --------------------------------------------------------------------------- measurements


def clip_box(box_xywh: Sequence[int], height: int, width: int) -> tuple[slice, slice] | None:
    """The numpy index `image[rows, cols]` of a WIDER box clipped to the image; None if empty."""
    x, y, w, h = (int(v) for v in box_xywh)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def pixel_change(original: np.ndarray, anonymized: np.ndarray, box_xywh: Sequence[int],
                 tol: float = DEFAULT_TOL) -> tuple[float, float] | None:
    """How much the face in `box_xywh` changed.

    Args:
      original: RGB uint8 [H, W, 3].
      anonymized: RGB uint8, same shape.
      box_xywh: WIDER `x y w h`.
      tol: luma tolerance (module docstring).

    Returns:
      (share of pixels with |delta luma| > tol, mean |delta| over pixels and channels), or None
      when the box is empty after clipping.
    """
    if original.shape != anonymized.shape:
        raise ValueError(f'image shapes differ: {original.shape} vs {anonymized.shape}')
    region = clip_box(box_xywh, *original.shape[:2])
    if region is None:
        return None
    diff = anonymized[region].astype(np.float32) - original[region].astype(np.float32)
    luma = np.abs(diff @ LUMA_WEIGHTS)
    return float(np.mean(luma > tol)), float(np.mean(np.abs(diff)))


def read_rgb(path: str) -> np.ndarray | None:
    """An image file as RGB uint8, EXIF orientation ignored (as the engine and TF decode it);
    None if it is missing or does not decode."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _audit_image(task: _Task, options: AuditOptions) -> tuple[list[FaceRow], float, int]:
    """Rows of one image, the seconds spent in the identity model and its face count."""
    rows = [FaceRow(task.name, task.anon_name, i, list(box), task.method, AUDITED,
                    record=task.records[i]) for i, box in enumerate(task.boxes)]
    for row in rows:
        if row.box[2] <= 0 or row.box[3] <= 0:
            row.status = EMPTY
        elif row.box[2] < options.min_face_px:
            row.status = SMALL
    candidates = [r for r in rows if r.status == AUDITED]
    if not candidates:
        return rows, 0.0, 0

    def mark(status: str) -> tuple[list[FaceRow], float, int]:
        for r in candidates:
            r.status = status
        return rows, 0.0, 0

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
        r.leak = r.changed_share < options.min_changed
    large = [r for r in candidates if r.status == AUDITED and options.identity_min_px > 0
             and min(r.box[2], r.box[3]) >= options.identity_min_px]
    seconds = 0.0
    if large:
        from safefakes_jax.anonymizers import identity  # dlib loads only when needed.

        start = time.perf_counter()
        dist = identity.load().distances(original, anonymized, [r.box for r in large])
        seconds = time.perf_counter() - start
        for r, d in zip(large, dist, strict=True):
            r.identity_distance = float(d)
            r.identity_match = bool(d < MATCH_THRESHOLD)
    return rows, seconds, len(large)


_OPTIONS: AuditOptions | None = None


def _init_worker(options: AuditOptions) -> None:
    global _OPTIONS
    _OPTIONS = options
    cv2.setNumThreads(1)  # One image per process; threads would only contend.


def _work(task: _Task) -> tuple[list[FaceRow], float, int]:
    assert _OPTIONS is not None
    return _audit_image(task, _OPTIONS)


# --------------------------------------------------------------------------- input


def _key(name: str) -> str:
    """`event/name` without extension: matches `.jpg` originals with `.png` outputs."""
    return os.path.splitext(name.strip().replace(os.sep, '/'))[0]


def read_manifest(path: str, split: str) -> tuple[dict[str, dict], int]:
    """The manifest entries of `split`, keyed by `_key(image)`, and the count of unparsable
    lines (a torn last line of an interrupted run, say). Entries without `split` count for
    every split. Missing file: ({}, 0)."""
    entries, bad = {}, 0
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    entry = None
                if not isinstance(entry, dict) or not isinstance(entry.get('image'), str):
                    bad += 1
                elif entry.get('split', split) == split:
                    entries[_key(entry['image'])] = entry
    except FileNotFoundError:
        pass
    return entries, bad


def _read_config(anon: str) -> dict:
    try:
        with open(os.path.join(anon, CONFIG_FILE), encoding='utf-8') as f:
            config = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return config.get('settings', config) if isinstance(config, dict) else {}


def _plan(orig: str, anon: str, split: str, method: str | None
          ) -> tuple[list[_Task], dict[str, dict], list[str], dict[str, int]]:
    """The per-image tasks, the manifest entries, warnings and input counts."""
    if not os.path.isdir(orig):
        raise AuditInputError(f'original folder not found: {orig}')
    if not os.path.isdir(anon):
        raise AuditInputError(f'anonymized folder not found: {anon}')
    if os.path.realpath(orig) == os.path.realpath(anon):
        raise AuditInputError(f'--orig and --anon are the same folder: {orig}')
    orig_txt, orig_images = wider.split_paths(orig, split)
    anon_txt, anon_images = wider.split_paths(anon, split)
    for path, what in ((orig_txt, 'original annotations'), (orig_images, 'original images'),
                       (anon_txt, 'anonymized annotations'),
                       (anon_images, 'anonymized images')):
        if not os.path.exists(path):
            raise AuditInputError(f'{what} not found: {path}')
    originals = wider.read_bbx_gt(orig_txt, allow_negative=True)
    copies = {_key(a.name): a for a in wider.read_bbx_gt(anon_txt, allow_negative=True)}
    entries, bad_lines = read_manifest(os.path.join(anon, MANIFEST), split)
    config = _read_config(anon)
    anonymizer = config.get('anonymizer')
    default_method = (anonymizer.get('name') if isinstance(anonymizer, dict) else None) \
        or os.path.basename(os.path.normpath(anon))
    warnings = []
    if os.path.exists(os.path.join(anon, PARTIAL)):
        warnings.append(f'{os.path.join(anon, PARTIAL)} exists: the anonymization run has not '
                        'finished (or was interrupted)')
    if bad_lines:
        warnings.append(f'{os.path.join(anon, MANIFEST)}: {bad_lines} unparsable lines ignored')
    if config.get('image_format', 'jpeg') == 'jpeg' and int(config.get('jpeg_quality', 95)) < 90:
        warnings.append(f'copy written at JPEG quality {config["jpeg_quality"]}: the luma '
                        'tolerance was measured for quality 95; consider a larger --tol')
    counts = collections.Counter()
    tasks = []
    for ann in originals:
        key = _key(ann.name)
        entry = entries.get(key)
        copy = copies.get(key)
        anon_name = copy.name if copy is not None else None
        if copy is not None and not np.array_equal(copy.boxes, ann.boxes):
            counts['annotation_mismatch'] += 1
        if anon_name is None:  # Not in the copy's txt: the file may still be there.
            out = entry.get('output') if entry else None
            probes = ([out] if isinstance(out, str) else []) + [key + '.jpg', key + '.png']
            anon_name = next((p for p in probes
                              if os.path.isfile(os.path.join(anon_images, p))), None)
            if anon_name is not None:
                counts['images_not_in_txt'] += 1
        anon_path = os.path.join(anon_images, anon_name) if anon_name else None
        if anon_path is not None and not os.path.isfile(anon_path):
            anon_path = None  # Listed in the txt, but the file is gone.
        records: list[str | None] = [None] * len(ann.boxes)
        if entry is not None:
            faces = entry.get('faces') or []
            if len(faces) == len(ann.boxes):
                records = [str(r) for r in faces]
            elif entry.get('status', 'ok') == 'ok':
                counts['manifest_face_count_mismatch'] += 1
        label = method or (entry.get('method') if entry else None) or default_method
        tasks.append(_Task(ann.name, os.path.join(orig_images, ann.name),
                           anon_name if anon_path else None, anon_path,
                           tuple(tuple(int(v) for v in b) for b in ann.boxes), str(label),
                           tuple(records)))
    extra = set(copies) - {_key(a.name) for a in originals}
    for what, n in (('annotation_mismatch', 'images whose boxes differ between the txts'),
                    ('images_not_in_txt', 'images absent from the copy\'s txt but on disk '
                     '(audited)'),
                    ('manifest_face_count_mismatch', 'manifest entries whose face count differs '
                     'from the annotation (records not used)')):
        if counts[what]:
            warnings.append(f'{counts[what]} {n}')
    if extra:
        warnings.append(f'{len(extra)} images in the copy\'s txt are not in the original\'s '
                        f'(first: {sorted(extra)[0]}); not audited')
    return tasks, entries, warnings, dict(counts)


# --------------------------------------------------------------------------- summary


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else None


def summarize_rows(rows: Sequence[FaceRow]) -> dict[str, Any]:
    """Totals over `rows`: faces per status, leak rate (leaks / audited faces), mean changed
    share and mean absolute change of the audited faces, identity-match rate and mean distance
    over the faces with a distance."""
    status = collections.Counter(r.status.split(':')[0] if r.status.startswith(UNVERIFIED)
                                 else r.status for r in rows)
    audited = [r for r in rows if r.status == AUDITED]
    with_id = [r for r in audited if r.identity_distance is not None]
    leaks = sum(r.leak for r in audited)
    return {
        'faces_annotated': len(rows),
        'faces_audited': len(audited),
        'faces_below_min_face_px': status[SMALL],
        'faces_empty_or_outside': status[EMPTY] + status[OUTSIDE],
        'faces_missing': status[MISSING],
        'faces_unverified': status[UNVERIFIED],
        'leaks': leaks,
        'leak_rate': round(leaks / len(audited), 6) if audited else None,
        'mean_changed_share': _mean(r.changed_share for r in audited),
        'mean_abs_change': _mean(r.mean_abs_change for r in audited),
        'identity_faces': len(with_id),
        'identity_match_rate': (round(sum(r.identity_match for r in with_id) / len(with_id), 6)
                                if with_id else None),
        'mean_identity_distance': _mean(r.identity_distance for r in with_id),
    }


def summarize_manifest(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of the manifest's face records (`anonymized`, `skipped`, `fallback`, and each full
    record) and of its failed images."""
    records = collections.Counter()
    failed = 0
    for entry in entries:
        failed += entry.get('status', 'ok') != 'ok'
        records.update(str(r) for r in entry.get('faces') or [])
    kinds = collections.Counter(r.split(':')[0] for r in records.elements())
    return {'anonymized': kinds['anonymized'], 'skipped': kinds['skipped'],
            'fallback': kinds['fallback'], 'failed_images': failed,
            'records': dict(sorted(records.items()))}


# --------------------------------------------------------------------------- driver


def audit(orig: str | os.PathLike, anon: str | os.PathLike, split: str = 'train',
          options: AuditOptions | None = None, workers: int = 1, method: str | None = None,
          fail_on_missing: bool = False, progress: bool = True) -> AuditResult:
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

    Returns:
      An `AuditResult`.

    Raises:
      AuditInputError: a missing folder or annotation file (the message names the path).
      wider.FormatError: a malformed annotation file (names file and line).
    """
    from tqdm import tqdm

    options = options or AuditOptions()
    start = time.perf_counter()
    orig, anon = os.fspath(orig), os.fspath(anon)
    tasks, entries, warnings, counts = _plan(orig, anon, split, method)
    workers = (os.cpu_count() or 1) if workers <= 0 else workers
    per_task: list[list[FaceRow]] = []
    id_seconds, id_faces = 0.0, 0
    bar = tqdm(total=len(tasks), desc='leak audit', unit='img', disable=not progress)

    def collect(result: tuple[list[FaceRow], float, int]) -> None:
        nonlocal id_seconds, id_faces
        per_task.append(result[0])
        id_seconds, id_faces = id_seconds + result[1], id_faces + result[2]
        bar.update()
        bar.set_postfix_str(f'{id_faces} identity faces', refresh=False)

    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            collect(_audit_image(task, options))
    else:
        # Spawn: the caller may hold threads (JAX, TF) that make fork unsafe. imap keeps order.
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker,
                      initargs=(options,)) as pool:
            for result in pool.imap(_work, tasks, chunksize=1):
                collect(result)
    bar.close()
    seconds = time.perf_counter() - start
    rows = [r for task_rows in per_task for r in task_rows]

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
    methods = {m: summarize_rows(rs) for m, rs in sorted(by_method.items())}
    if entries:
        task_method = {_key(t.name): t.method for t in tasks}
        grouped: dict[str, list[dict]] = collections.defaultdict(list)
        for key, entry in entries.items():
            if key in task_method:
                grouped[task_method[key]].append(entry)
        for m, es in grouped.items():
            methods.setdefault(m, summarize_rows([]))['manifest'] = summarize_manifest(es)
    summary = {
        'orig': orig, 'anon': anon, 'split': split,
        'options': dataclasses.asdict(options) | {'match_threshold': MATCH_THRESHOLD,
                                                  'change_measure': 'abs delta luma (BT.601)'},
        'images': len(tasks), 'images_missing': len(missing),
        'manifest': bool(entries),
        'methods': methods,
        'all': summarize_rows(rows),
        'input_counts': counts,
        'warnings': warnings,
        'seconds': round(seconds, 3),
        'faces_per_second': round(len(rows) / seconds, 2) if seconds > 0 else None,
        'identity_seconds': round(id_seconds, 3),
        'identity_faces_per_cpu_second': (round(id_faces / id_seconds, 2) if id_seconds > 0
                                          else None),
        'exit_status': exit_status,
    }
    return AuditResult(rows, summary, leaks, sorted(missing.items()), unverified, warnings,
                       exit_status)
