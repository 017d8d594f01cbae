"""CIAGAN's training faces (`CiaganFaces`) from the synthetic WIDER set or CelebA.

Per face the set holds the original's face crop (`ciagan_faces`: 178 x 218, cubic) already
Lanczos resized to the loader's square S = int(R * 1.125) (144 for R = 128), which is the
loader's first step, so nothing is lost; the landmarks in the 178 x 218 crop frame (from which
the pair loader draws the landmark and mask images each step, exactly as the original's
process_data.py does, then resizes them to S); the identity class 0..K-1; the source name. At
S = 144 a face takes 62 KB (CelebA's ~40k faces: 2.5 GB; the 178 x 218 crops would take
4.6 GB, plus the two drawn images).

Sources:

* `build_wider_faces`: a WIDER-layout folder with the landmarks sidecar (the synthetic set:
  exact `landmarks68` and an `identity` per face). Faces narrower than `min_face_px`, WIDER
  `invalid` faces and faces with degenerate geometry are skipped and counted. Identities map
  to classes in sorted order; given the train set's `identity_names` (val), identities not in
  it get class -1 (the synthetic val pool is disjoint from train, so all of them): such a set
  is for inference / evaluation, and `ciagan_pairs` refuses it.
* `read_celeba`: CelebA's aligned images (`img_align_celeba/*.jpg`) and
  `identity_CelebA.txt` (optionally `list_eval_partition.txt`), at the root or in CelebA's
  `Img/`, `Anno/`, `Eval/` subfolders. The original's identity list ships with its code, not
  with ours (`dataset/celeba/legit_indices.npy`: 1,563 CelebA identity numbers, sorted as
  strings; its README says 1,200 identities of at least 30 images were trained on, we read
  them as the list's first 1,200): pass it as `identities` (the tool's `--identities`) and
  class k is its k-th entry. Without it the selection is Safe Fakes' description: identities
  with at least `min_faces` images (counted in the identity file, within the chosen
  partition), the first `num_identities` of them by identity number. Landmarks come from
  `landmarker` (the original: dlib's frontal detector at
  upsample 1 on the whole aligned image, first detection, the 68-point predictor;
  `tools/prepare_ciagan_faces.py` passes that); images without a face are skipped and counted,
  so an identity may end with fewer than `min_faces` faces.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from safefakes_jax.data import (
    atomic_io,
    ciagan_faces,
    images,
    landmarks_sidecar,
    root_paths,
    wider,
)

_ARRAYS = ('faces', 'landmarks', 'identity', 'identity_names', 'source')
Landmarker = Callable[[np.ndarray], 'np.ndarray | None']


@dataclasses.dataclass
class CiaganFaces:
    """CIAGAN's training faces (module docstring).

    Attributes:
      faces: uint8 [N, S, S, 3] RGB, the crop resized to the loader square.
      landmarks: float32 [N, 68, 2] in the 178 x 218 crop frame (the original's).
      identity: int32 [N] class 0..K-1 (-1: not in the mapping).
      identity_names: int64 [K] the source's identity label of each class.
      source: str [N] where the face comes from (`event/name.jpg:face` or the CelebA file).
      skipped: faces left out, by reason.
    """

    faces: np.ndarray
    landmarks: np.ndarray
    identity: np.ndarray
    identity_names: np.ndarray
    source: np.ndarray
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def side(self) -> int:
        """S, the side of the stored squares."""
        return int(self.faces.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.identity_names)

    def save(self, path: str | os.PathLike) -> None:
        """Writes an uncompressed `.npz` atomically (loads without pickle)."""
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        arrays['skipped_reasons'] = np.array(sorted(self.skipped), dtype=str)
        arrays['skipped_counts'] = np.array([self.skipped[k] for k in sorted(self.skipped)])
        with atomic_io.atomic_open(path, 'wb') as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CiaganFaces:
        """Reads a `save`d file (`allow_pickle=False`)."""
        with np.load(path, allow_pickle=False) as z:
            counts = (int(c) for c in z['skipped_counts'])
            skipped = dict(zip(z['skipped_reasons'].tolist(), counts, strict=True))
            return cls(**{k: z[k] for k in _ARRAYS}, skipped=skipped)


def _faces_of(image: np.ndarray, landmarks: Iterable[np.ndarray], side: int):
    """(square, crop landmarks) or None (degenerate) per face of one image."""
    out = []
    for lm in landmarks:
        try:
            geometry = ciagan_faces.crop_geometry(lm)
            crop = ciagan_faces.cut_face(image, geometry)
        except ValueError:  # Degenerate geometry.
            out.append(None)
            continue
        square = ciagan_faces.to_square(crop, side)
        out.append((square, ciagan_faces.crop_landmarks(lm, geometry)))
    return out


def _assemble(rows, labels, names, sources, skipped, side) -> CiaganFaces:
    n = len(rows)
    return CiaganFaces(
        faces=np.stack([r[0] for r in rows]) if n else np.zeros((0, side, side, 3), np.uint8),
        landmarks=np.stack([r[1] for r in rows]) if n else np.zeros((0, 68, 2), np.float32),
        identity=np.asarray(labels, np.int32).reshape(n),
        identity_names=np.asarray(names, np.int64).reshape(-1),
        source=np.array(sources, dtype=str).reshape(n),
        skipped=skipped,
    )


def _map_labels(raw: Sequence[int], names: np.ndarray | None) -> tuple[list[int], np.ndarray]:
    names = np.unique(np.asarray(raw, np.int64)) if names is None else np.asarray(names, np.int64)
    lookup = {int(v): k for k, v in enumerate(names)}
    return [lookup.get(int(v), -1) for v in raw], names


def build_wider_faces(
    root: str | os.PathLike,
    split: str,
    resolution: int = 128,
    *,
    min_face_px: int = 24,
    identity_names: np.ndarray | None = None,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
) -> CiaganFaces:
    """The faces of a WIDER-layout split with a landmarks sidecar (module docstring).

    Args:
      root: the folder (`synthetic.generate`'s layout).
      split: 'train' or 'val'.
      resolution: R; the squares are int(R * 1.125).
      min_face_px: faces narrower than this (box w) are skipped ('small').
      identity_names: the class labels to map to (a train set's); None: this split's own.
      threads: decoding threads (the result does not depend on it).
      progress: called with the number of images done after each chunk.

    Raises:
      FileNotFoundError: no split or no sidecar. wider.FormatError / ValueError: bad files.
    """
    txt, images_dir = wider.require_split(root, split)
    sidecar = landmarks_sidecar.path(root, split)
    if not os.path.isfile(sidecar):
        raise FileNotFoundError(f'{sidecar}: landmarks sidecar not found (CIAGAN needs it)')
    records = landmarks_sidecar.read(sidecar)
    anns = {a.name: a for a in wider.read_bbx_gt(txt)}
    invalid = wider.ATTRIBUTE_NAMES.index('invalid')
    skipped = {'small': 0, 'invalid': 0, 'bad_landmarks': 0, 'no_landmarks': 0}
    todo = []  # (image name, [(face index, landmarks68, identity)])
    for lineno, rec in records:
        ann = anns.get(rec['image'])
        faces = []
        for j, face in enumerate(rec['faces']):
            where = f'{sidecar}:{lineno} face {j}'
            if face['box'][2] < min_face_px:
                skipped['small'] += 1
            elif ann is not None and j < len(ann.boxes) and ann.attributes[j, invalid]:
                skipped['invalid'] += 1
            elif face.get('landmarks68') is None or face.get('identity') is None:
                skipped['no_landmarks'] += 1
            else:
                lm = landmarks_sidecar.check_landmarks68(face['landmarks68'], where)
                faces.append((j, lm, int(face['identity'])))
        if faces:
            todo.append((rec['image'], faces))
    side = ciagan_faces.loader_side(resolution)

    def one(entry):
        name, faces = entry
        image = images.read(root_paths.resolve_inside(images_dir, name, txt))
        return _faces_of(image, [lm for _, lm, _ in faces], side)

    rows, raw, sources = [], [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for start in range(0, len(todo), 32):  # Chunks bound the decoded images held.
            chunk = todo[start : start + 32]
            for (name, faces), done in zip(chunk, pool.map(one, chunk), strict=True):
                for (j, _, ident), got in zip(faces, done, strict=True):
                    if got is None:
                        skipped['bad_landmarks'] += 1
                        continue
                    rows.append(got)
                    raw.append(ident)
                    sources.append(f'{name}:{j}')
            if progress is not None:
                progress(len(chunk))
    labels, names = _map_labels(raw, identity_names)
    return _assemble(rows, labels, names, sources, skipped, side)


# --------------------------------------------------------------------------- CelebA


def _find(root: str, sub: str, name: str) -> str | None:
    for path in (os.path.join(root, name), os.path.join(root, sub, name)):
        if os.path.exists(path):
            return path
    return None


def _read_table(path: str, what: str, allowed: Callable[[int], bool]) -> dict[str, int]:
    """`name value` lines of a CelebA list; FormatError naming the file and line."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(wider.read_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].lower().endswith('.jpg'):
            raise wider.FormatError(path, lineno, f'expected "<image>.jpg <{what}>", got {line!r}')
        try:
            value = int(fields[1])
        except ValueError:
            raise wider.FormatError(
                path, lineno, f'{what} {fields[1]!r} is not an integer'
            ) from None
        if not allowed(value):
            raise wider.FormatError(path, lineno, f'{what} {value} is out of range')
        if fields[0] in out:
            raise wider.FormatError(path, lineno, f'{fields[0]} is listed twice')
        out[fields[0]] = value
    return out


PARTITIONS = {'train': 0, 'val': 1, 'test': 2}


def celeba_selection(
    root: str | os.PathLike,
    *,
    min_faces: int = 30,
    num_identities: int = 1200,
    partition: str = 'all',
    identities: Sequence[int] | None = None,
) -> tuple[list[tuple[str, int]], np.ndarray, str]:
    """The CelebA images to use: ([(file, class)], identity numbers of the classes, image dir).

    `identities` (e.g. the original's `legit_indices.npy`): the classes' identity numbers in
    class order (the first `num_identities`; `min_faces` is then not applied).

    Raises:
      FileNotFoundError: a missing folder or list. wider.FormatError: a malformed list.
    """
    root = os.fspath(root)
    image_dir = _find(root, 'Img', 'img_align_celeba')
    ident_file = _find(root, 'Anno', 'identity_CelebA.txt')
    if image_dir is None or ident_file is None:
        raise FileNotFoundError(
            f'{root}: not a CelebA folder (needs img_align_celeba/ and identity_CelebA.txt, '
            'at the root or under Img/ and Anno/)'
        )
    identity = _read_table(ident_file, 'identity', lambda v: v >= 0)
    if partition != 'all':
        if partition not in PARTITIONS:
            raise ValueError(
                f'partition must be all or one of {list(PARTITIONS)}, got {partition!r}'
            )
        part_file = _find(root, 'Eval', 'list_eval_partition.txt')
        if part_file is None:
            raise FileNotFoundError(f'{root}: list_eval_partition.txt not found')
        parts = _read_table(part_file, 'partition', lambda v: v in (0, 1, 2))
        identity = {k: v for k, v in identity.items() if parts.get(k) == PARTITIONS[partition]}
    counts: dict[int, int] = {}
    for v in identity.values():
        counts[v] = counts.get(v, 0) + 1
    if identities is None:
        names = np.array(sorted(v for v, c in counts.items() if c >= min_faces))
    else:
        names = np.asarray(identities, np.int64).reshape(-1)
        if len(np.unique(names)) != len(names):
            raise ValueError('identities lists an identity twice')
    names = names[:num_identities]
    lookup = {int(v): k for k, v in enumerate(names)}
    files = sorted((f, lookup[v]) for f, v in identity.items() if v in lookup)
    return files, names.astype(np.int64), image_dir


def read_celeba(
    root: str | os.PathLike,
    landmarker: Landmarker,
    resolution: int = 128,
    *,
    min_faces: int = 30,
    num_identities: int = 1200,
    partition: str = 'all',
    identities: Sequence[int] | None = None,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
) -> CiaganFaces:
    """CIAGAN's CelebA training faces (module docstring).

    Args:
      root: the CelebA folder.
      landmarker: RGB uint8 image -> float [68, 2] landmarks of its (first) face, or None.
      resolution: R; the squares are int(R * 1.125).
      min_faces: the fewest images an identity needs (30, Safe Fakes).
      num_identities: how many of those identities, in identity-number order (1,200).
      partition: 'all', or CelebA's 'train' / 'val' / 'test' (`list_eval_partition.txt`).
      identities: the classes' identity numbers (`celeba_selection`), or None.
      threads: threads running `landmarker` and the crops (it must be thread safe).
      progress: called with the number of images done after each chunk.
    """
    files, names, image_dir = celeba_selection(
        root,
        min_faces=min_faces,
        num_identities=num_identities,
        partition=partition,
        identities=identities,
    )
    side = ciagan_faces.loader_side(resolution)
    skipped = {'no_face_detected': 0, 'bad_landmarks': 0}

    def one(entry):
        image = images.read(os.path.join(image_dir, entry[0]))
        lm = landmarker(image)
        return 'no_face_detected' if lm is None else _faces_of(image, [lm], side)[0]

    rows, labels, sources = [], [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for start in range(0, len(files), 64):
            chunk = files[start : start + 64]
            for (name, label), got in zip(chunk, pool.map(one, chunk), strict=True):
                if got is None or isinstance(got, str):
                    skipped['bad_landmarks' if got is None else got] += 1
                    continue
                rows.append(got)
                labels.append(label)
                sources.append(name)
            if progress is not None:
                progress(len(chunk))
    return _assemble(rows, labels, names, sources, skipped, side)


def load_faces(data: Mapping[str, Any], split: str, resolution: int) -> CiaganFaces:
    """The faces of a CIAGAN config's `data` section for `split` ('train' or 'val').

    `data.source`: 'npz' reads the `CiaganFaces` file `data.<split>`; 'wider' builds the faces
    of the WIDER-layout folder `data.<split>` in memory (`build_wider_faces`, narrower than
    `data.min_face_px` left out), val with the train split's identity mapping.

    Raises:
      FileNotFoundError: a missing file or folder (the message says how to make it).
      ValueError: an unknown source, or faces stored for another resolution.
    """
    path = data[split]
    if data['source'] == 'npz':
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'{path}: no CIAGAN face file (make one with tools/prepare_ciagan_faces.py)'
            )
        faces = CiaganFaces.load(path)
        if faces.side != ciagan_faces.loader_side(resolution):
            raise ValueError(
                f'{path}: faces stored at {faces.side} px, resolution {resolution} needs '
                f'{ciagan_faces.loader_side(resolution)}; prepare them again'
            )
        return faces
    if data['source'] != 'wider':
        raise ValueError(f"data.source must be 'wider' or 'npz', got {data['source']!r}")
    names = load_faces(data, 'train', resolution).identity_names if split == 'val' else None
    return build_wider_faces(
        path, split, resolution, min_face_px=data['min_face_px'], identity_names=names
    )
