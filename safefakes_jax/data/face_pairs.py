"""Face pairs: each annotated face of an original WIDER-layout folder with its anonymized copy.

Two levels, both read from the two folders alone (no synthetic sidecar needed):

* `pair_images(orig, anon, split)`: which original image is compared with which copy
  (`ImagePair`: both files, the boxes, the method label, the manifest's per-face records),
  plus the copy's manifest, warnings and input counts. The leak audit works on these.
* `iter_batches(pairing, size)`: aligned crops of every face, the original's and the copy's cut
  from the same square (`face_crops.crop_box`, the GANs' context rule) and resized to
  `size` x `size`, streamed in batches (`FacePairBatch`). Faces narrower than `min_face_px`,
  faces whose manifest record is not `anonymized` and faces whose images are missing or
  unreadable are left out and counted by reason (`Pairing.skipped`). The image metrics use
  these.

Every name joined to a folder comes from an input file (the two annotation txts, the copy's
`anonymization_manifest.jsonl`) and is confined to its root with `root_paths.resolve_inside`: a
name that is absolute, has a `..` component, or resolves (through a symlinked image or folder)
outside its images folder is a `root_paths.PathEscapeError` naming the file and line. A copy
whose image is a symlink to the original is refused that way too: it resolves into the other
folder.

Originals and copies are matched by name *without extension* (`_key`), so that `.jpg`
originals meet the `.png` outputs of a lossless copy. Two names with one key in one listing
(`a.jpg` and `a.png` in the same txt, two manifest entries, or both files on disk for an image
that the copy's txt does not list) would compare different pictures; that is a
`NameCollisionError` naming both, never a silent pick.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np

from safefakes_jax.data import face_crops, images, manifest, root_paths, wider

MANIFEST = manifest.MANIFEST
PARTIAL = manifest.PARTIAL  # Present while a run is unfinished.


class PairInputError(FileNotFoundError):
    """Bad input: a missing folder or file; the message names the path."""


class NameCollisionError(ValueError):
    """Two listed names that would be matched with the same image (module docstring)."""


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """One original image and its copy, resolved inside their roots.

    Attributes:
      name: the original's name in its txt.
      orig_path: its file.
      anon_name: the copy's name under the copy's images folder; None when it is missing.
      anon_path: the copy's file; None when it is missing.
      boxes: the annotated `x y w h` boxes.
      method: the method label.
      records: the manifest's per-face records (None without a usable manifest entry).
    """

    name: str
    orig_path: str
    anon_name: str | None
    anon_path: str | None
    boxes: tuple[tuple[int, int, int, int], ...]
    method: str
    records: tuple[str | None, ...]


@dataclasses.dataclass
class Manifest:
    """The copy's manifest entries of one split.

    Attributes:
      path: the manifest file.
      entries: `_key(image)` -> entry.
      lines: `_key(image)` -> the entry's 1-based line.
    """

    path: str
    entries: dict[str, dict]
    lines: dict[str, int]


@dataclasses.dataclass
class Pairing:
    """The result of `pair_images`.

    Attributes:
      pairs: one `ImagePair` per image of the original's txt, in its order.
      manifest: the copy's manifest entries of the split.
      config: the settings of the copy's `anonymization_config.json` ({} without one).
      warnings: what looked wrong but did not stop the pairing.
      counts: how often each warning's condition occurred.
    """

    pairs: list[ImagePair]
    manifest: Manifest
    config: dict
    warnings: list[str]
    counts: dict[str, int]


def _key(name: str) -> str:
    """`event/name` without extension: matches `.jpg` originals with `.png` outputs."""
    return os.path.splitext(name.strip())[0]


def check_unique_keys(annotations: Sequence[wider.ImageAnnotation], path: str) -> None:
    """Refuses two names of `annotations` (read from `path`) with the same `_key`.

    Raises:
      NameCollisionError: naming both names and their lines.
    """
    seen: dict[str, wider.ImageAnnotation] = {}
    for ann in annotations:
        first = seen.setdefault(_key(ann.name), ann)
        if first is not ann:
            raise NameCollisionError(
                f'{path}:{first.line} and {path}:{ann.line}: {first.name!r} and {ann.name!r} '
                'are the same image without extension; originals and copies are matched '
                'by that name and would compare different pictures. Rename one of them'
            )


def read_manifest(path: str, split: str) -> Manifest:
    """The manifest entries of `split`, read with `manifest.numbered_entries` (the one reader;
    a torn or unparsable line is skipped there).

    Every entry's `image` and `output` must be a safe relative name, and no two entries of the
    split may share a key. A missing file has no entries.

    Raises:
      root_paths.PathEscapeError: an unsafe `image` or `output` (names the file and line).
      NameCollisionError: two entries for one image key (names both lines).
    """
    result = Manifest(path, {}, {})
    for lineno, entry in manifest.numbered_entries(path):
        where = f'{path}:{lineno}'
        if not isinstance(entry['image'], str):
            raise root_paths.PathEscapeError(f'{where}: image {entry["image"]!r} is not a name')
        root_paths.check_relative_name(entry['image'], where)
        output = entry.get('output')
        if output is not None:
            if not isinstance(output, str):
                raise root_paths.PathEscapeError(f'{where}: output {output!r} is not a name')
            root_paths.check_relative_name(output, where)
        if entry['split'] != split:
            continue
        key = _key(entry['image'])
        if key in result.entries:
            raise NameCollisionError(
                f'{path}:{result.lines[key]} and {where}: two entries for image '
                f'{result.entries[key]["image"]!r} / {entry["image"]!r} (same name without '
                'extension); which one describes the copy is ambiguous'
            )
        result.entries[key] = entry
        result.lines[key] = lineno
    return result


def read_config(anon: str) -> dict:
    """The settings of the copy's `anonymization_config.json` ({} if there is none).

    Raises:
      ValueError: the file is not a valid config (`manifest.read_config`; names the file).
    """
    config = manifest.read_config(anon) or {}
    settings = config.get('settings', {})
    return settings if isinstance(settings, dict) else {}


def _on_disk(anon_images: str, key: str, where: str) -> str | None:
    """The copy's file for `key` when its txt does not list it: `key.jpg` or `key.png`.

    Raises:
      NameCollisionError: both exist.
      root_paths.PathEscapeError: the file resolves outside `anon_images`.
    """
    found = [
        name
        for name in (key + '.jpg', key + '.png')
        if os.path.isfile(root_paths.resolve_inside(anon_images, name, where))
    ]
    if len(found) > 1:
        raise NameCollisionError(
            f'{where}: the copy has both {found[0]!r} and {found[1]!r} '
            f'under {anon_images} and lists neither; which one is the '
            'anonymized image is ambiguous'
        )
    return found[0] if found else None


def pair_images(
    orig: str | os.PathLike,
    anon: str | os.PathLike,
    split: str = 'train',
    method: str | None = None,
) -> Pairing:
    """Pairs every image of `orig`'s `split` with its copy in `anon` (module docstring).

    Args:
      orig: the original WIDER-layout folder.
      anon: the anonymized copy.
      split: 'train' or 'val'.
      method: label for every face, overriding the manifest's `method` (default: the
        manifest's, else the copy's config's anonymizer name, else the copy's folder name).

    Raises:
      PairInputError: a missing folder or annotation file.
      wider.FormatError: a malformed annotation file.
      root_paths.PathEscapeError: a listed name that escapes its folder (module docstring).
      NameCollisionError: two listed names with the same key.
    """
    orig, anon = os.fspath(orig), os.fspath(anon)
    if not os.path.isdir(orig):
        raise PairInputError(f'original folder not found: {orig}')
    if not os.path.isdir(anon):
        raise PairInputError(f'anonymized folder not found: {anon}')
    if os.path.realpath(orig) == os.path.realpath(anon):
        raise PairInputError(f'--orig and --anon are the same folder: {orig}')
    orig_txt, orig_images = wider.split_paths(orig, split)
    anon_txt, anon_images = wider.split_paths(anon, split)
    for path, what in (
        (orig_txt, 'original annotations'),
        (orig_images, 'original images'),
        (anon_txt, 'anonymized annotations'),
        (anon_images, 'anonymized images'),
    ):
        if not os.path.exists(path):
            raise PairInputError(f'{what} not found: {path}')
    originals = wider.read_bbx_gt(orig_txt, allow_negative=True)
    check_unique_keys(originals, orig_txt)
    copy_list = wider.read_bbx_gt(anon_txt, allow_negative=True)
    check_unique_keys(copy_list, anon_txt)
    copies = {_key(a.name): a for a in copy_list}
    listed = read_manifest(os.path.join(anon, MANIFEST), split)
    entries = listed.entries
    config = read_config(anon)
    anonymizer = config.get('anonymizer')
    default_method = (
        anonymizer.get('name') if isinstance(anonymizer, dict) else None
    ) or os.path.basename(os.path.normpath(anon))
    warnings = []
    if os.path.exists(os.path.join(anon, PARTIAL)):
        warnings.append(
            f'{os.path.join(anon, PARTIAL)} exists: the anonymization run has not '
            'finished (or was interrupted)'
        )
    counts: collections.Counter = collections.Counter()
    pairs = []
    for ann in originals:
        key = _key(ann.name)
        orig_path = root_paths.resolve_inside(orig_images, ann.name, f'{orig_txt}:{ann.line}')
        entry = entries.get(key)
        copy = copies.get(key)
        out = entry.get('output') if entry else None
        anon_path = None
        if copy is not None:
            anon_name = copy.name
            anon_path = root_paths.resolve_inside(anon_images, anon_name, f'{anon_txt}:{copy.line}')
            if not np.array_equal(copy.boxes, ann.boxes):
                counts['annotation_mismatch'] += 1
            if isinstance(out, str) and out != anon_name:
                counts['manifest_output_mismatch'] += 1
        elif isinstance(out, str):  # Not in the copy's txt: the file may still be there.
            anon_name = out
            anon_path = root_paths.resolve_inside(
                anon_images, out, f'{listed.path}:{listed.lines[key]}'
            )
        else:
            anon_name = _on_disk(anon_images, key, f'{orig_txt}:{ann.line}')
            if anon_name is not None:
                anon_path = os.path.join(anon_images, anon_name)
        if anon_path is not None and not os.path.isfile(anon_path):
            anon_path = None  # Listed, but the file is gone.
        if anon_path is not None and copy is None:
            counts['images_not_in_txt'] += 1
        records: list[str | None] = [None] * len(ann.boxes)
        if entry is not None:
            faces = entry.get('faces') or []
            if len(faces) == len(ann.boxes):
                records = [str(r) for r in faces]
            elif entry.get('status', 'ok') == 'ok':
                counts['manifest_face_count_mismatch'] += 1
        label = method or (entry.get('method') if entry else None) or default_method
        pairs.append(
            ImagePair(
                ann.name,
                orig_path,
                anon_name if anon_path else None,
                anon_path,
                tuple(tuple(int(v) for v in b) for b in ann.boxes),
                str(label),
                tuple(records),
            )
        )
    extra = set(copies) - {_key(a.name) for a in originals}
    if extra:
        counts['copies_not_in_original'] = len(extra)
    for what, n in (
        ('annotation_mismatch', 'images whose boxes differ between the txts'),
        ('images_not_in_txt', "images absent from the copy's txt but on disk (paired)"),
        (
            'manifest_output_mismatch',
            "manifest entries whose output differs from the copy's txt (the txt's image used)",
        ),
        (
            'manifest_face_count_mismatch',
            'manifest entries whose face count differs from the annotation (records not used)',
        ),
    ):
        if counts[what]:
            warnings.append(f'{counts[what]} {n}')
    if extra:
        warnings.append(
            f"{len(extra)} images in the copy's txt are not in the original's "
            f'(first: {sorted(extra)[0]}); not paired'
        )
    return Pairing(pairs, listed, config, warnings, dict(counts))


# --------------------------------------------------------------------------- aligned crops

# Manifest records of faces the method was not applied to (left out of the crops).
_NOT_ANONYMIZED = ('skipped',)


@dataclasses.dataclass
class FacePairBatch:
    """Aligned crops of up to `batch_size` faces.

    Attributes:
      original: uint8 [B, size, size, 3] RGB crops of the original faces.
      anonymized: uint8 [B, size, size, 3] the same squares cut from the copies.
      image: the original's name of each face.
      face_index: int32 [B] the face's row within its image in the txt.
      box: int32 [B, 4] the annotated `x y w h` box.
      method: the method label of each face.
    """

    original: np.ndarray
    anonymized: np.ndarray
    image: list[str]
    face_index: np.ndarray
    box: np.ndarray
    method: list[str]

    def __len__(self) -> int:
        return len(self.original)


def _batch(faces: list[tuple[np.ndarray, np.ndarray, str, int, tuple, str]]) -> FacePairBatch:
    orig, anon, names, index, boxes, methods = zip(*faces, strict=True)
    return FacePairBatch(
        np.stack(orig),
        np.stack(anon),
        list(names),
        np.array(index, np.int32),
        np.array(boxes, np.int32),
        list(methods),
    )


def select_faces(pair: ImagePair, min_face_px: int, skipped: dict[str, int]) -> list[int]:
    """Indices of the faces of `pair` to measure; the others are counted into `skipped`:
    `small` (narrower than `min_face_px`, or empty) and `record:<record>` (the manifest says
    the method was not applied)."""
    chosen = []
    for i, (box, record) in enumerate(zip(pair.boxes, pair.records, strict=True)):
        if box[2] < max(min_face_px, 1) or box[3] <= 0:
            reason = 'small'
        elif record is not None and record.startswith(_NOT_ANONYMIZED):
            reason = f'record:{record}'
        else:
            chosen.append(i)
            continue
        skipped[reason] = skipped.get(reason, 0) + 1
    return chosen


def iter_batches(
    pairing: Pairing,
    size: int = 128,
    batch_size: int = 64,
    min_face_px: int = 10,
    skipped: dict[str, int] | None = None,
) -> Iterator[FacePairBatch]:
    """Streams aligned original / anonymized crops of the faces of `pairing` (module docstring).

    Both crops of a face are cut from the same square (`face_crops.crop_box` of the annotated
    box, zero padding outside the image) and resized to `size`; every batch but the last has
    `batch_size` faces.

    Args:
      pairing: from `pair_images`.
      size: the crops' side in pixels.
      batch_size: faces per batch.
      min_face_px: faces narrower than this are left out (`small`).
      skipped: if given, the faces left out are counted into it by reason: `small` (also empty
        boxes), `record:<record>` (the manifest says the method was not applied, e.g.
        `record:skipped:small`), `missing` (no copy), `unreadable` (an image that does not
        decode), `size_mismatch` (copy and original differ in size).

    Yields:
      `FacePairBatch`es, faces in txt order.
    """
    skipped = {} if skipped is None else skipped

    def skip(reason: str, n: int = 1) -> None:
        skipped[reason] = skipped.get(reason, 0) + n

    faces: list = []
    for pair in pairing.pairs:
        chosen = select_faces(pair, min_face_px, skipped)
        if not chosen:
            continue
        if pair.anon_path is None:
            skip('missing', len(chosen))
            continue
        try:
            original, anonymized = images.read(pair.orig_path), images.read(pair.anon_path)
        except images.ImageDecodeError:
            skip('unreadable', len(chosen))
            continue
        if original.shape != anonymized.shape:
            skip('size_mismatch', len(chosen))
            continue
        for i in chosen:
            square = face_crops.crop_box(pair.boxes[i])
            faces.append(
                (
                    face_crops.cut(original, square, size),
                    face_crops.cut(anonymized, square, size),
                    pair.name,
                    i,
                    pair.boxes[i],
                    pair.method,
                )
            )
            if len(faces) == batch_size:
                yield _batch(faces)
                faces = []
    if faces:
        yield _batch(faces)
