"""FDF-like face crops cut from a WIDER-layout folder with a landmarks sidecar.

The crop of a face follows DeepPrivacy: take the WIDER box `x y w h`, make it square by growing
its short side (centred: the box moves by `(long - short) // 2`), grow every side by
`int(0.35 * side)`, cut that square from the image with zero padding where it leaves the image,
and resize it to `size` (INTER_AREA when shrinking, INTER_LINEAR when growing).

Coordinates in the crop: a box edge `u` (WIDER `x`, `x + w`) maps to `(u - x1) * s` and a point
`p` in OpenCV pixel-centre coordinates (landmarks, keypoints) to `(p + 0.5 - x1) * s - 0.5`, with
`x1` the crop's left edge in the image and `s = size / crop side`. Keypoints keep their
visibility flag; absent ones stay `(0, 0, 0)`; visible ones may lie outside the crop (shoulders
usually do), so consumers clip as they need.

The sidecar is `landmarks/<split>.jsonl` (one JSON object per image, faces in txt order), as
written by `safefakes_jax.data.synthetic`.

`subset` takes a seeded random, nested subset of any `FaceCrops` (the paper's dataset-size
study); `fdf.read_fdf` reads FDF into the same dataclass.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import cv2
import numpy as np

from safefakes_jax.data import atomic_io, images, landmarks_sidecar, root_paths, wider

EXPANSION = 0.35
KEYPOINT_NAMES = landmarks_sidecar.KEYPOINT_NAMES
_ARRAYS = (
    'images',
    'boxes',
    'keypoints7',
    'landmarks68',
    'identity',
    'source_image',
    'face_index',
    'crop_boxes',
)


@dataclasses.dataclass
class FaceCrops:
    """A face-crop dataset.

    Attributes:
      images: uint8 [N, size, size, 3] RGB.
      boxes: float32 [N, 4] face box `x1 y1 x2 y2` in crop pixels.
      keypoints7: float32 [N, 7, 3] `(x, y, visible)` in crop pixels, `KEYPOINT_NAMES` order.
      landmarks68: float32 [N, 68, 2] in crop pixels.
      identity: int32 [N].
      source_image: str [N] `event/name.jpg` of the source image.
      face_index: int32 [N] the face's row within its image in the txt / sidecar.
      crop_boxes: int32 [N, 4] the square cut from the source image, `x1 y1 x2 y2` (may leave
        the image; that part is zero padding).
      skipped: faces left out, by reason ('small': width < min_face_px, 'invalid').
    """

    images: np.ndarray
    boxes: np.ndarray
    keypoints7: np.ndarray
    landmarks68: np.ndarray
    identity: np.ndarray
    source_image: np.ndarray
    face_index: np.ndarray
    crop_boxes: np.ndarray
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: str | os.PathLike) -> None:
        """Writes an uncompressed `.npz` atomically (loads without pickle)."""
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        arrays['skipped_reasons'] = np.array(sorted(self.skipped), dtype=str)
        arrays['skipped_counts'] = np.array(
            [self.skipped[k] for k in sorted(self.skipped)], np.int64
        )
        with atomic_io.atomic_open(path, 'wb') as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaceCrops:
        with np.load(path) as z:
            skipped = dict(
                zip(
                    z['skipped_reasons'].tolist(),
                    (int(c) for c in z['skipped_counts']),
                    strict=True,
                )
            )
            return cls(**{k: z[k] for k in _ARRAYS}, skipped=skipped)


def crop_box(box_xywh) -> np.ndarray:
    """The square crop `x1 y1 x2 y2` (int64) of a WIDER box `x y w h` (module docstring)."""
    x, y, w, h = (int(v) for v in box_xywh)
    side = max(w, h, 1)
    x1, y1 = x - (side - w) // 2, y - (side - h) // 2
    e = int(EXPANSION * side)
    return np.array([x1 - e, y1 - e, x1 + side + e, y1 + side + e], np.int64)


def cut(image: np.ndarray, crop_xyxy, size: int | None = None) -> np.ndarray:
    """Cuts `crop_xyxy` from `image` (zero padding outside) and resizes it to size x size
    (area when shrinking, bilinear when enlarging; None: at its own size)."""
    x1, y1, x2, y2 = (int(v) for v in crop_xyxy)
    h, w = image.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1) + image.shape[2:], image.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    if size is None or out.shape[0] == size:
        return out
    interp = cv2.INTER_AREA if out.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


def box_to_crop(box_xyxy, crop_xyxy, size: int) -> np.ndarray:
    """Maps box edges `x1 y1 x2 y2` (image pixels) into crop pixels."""
    c = np.asarray(crop_xyxy, np.float64)
    s = size / (c[2] - c[0])
    b = np.asarray(box_xyxy, np.float64)
    return (b - c[[0, 1, 0, 1]]) * s


def points_to_crop(points, crop_xyxy, size: int) -> np.ndarray:
    """Maps pixel-centre points [..., 2] (image) into crop pixels."""
    c = np.asarray(crop_xyxy, np.float64)
    s = size / (c[2] - c[0])
    return (np.asarray(points, np.float64) + 0.5 - c[:2]) * s - 0.5


def read_sidecar(root: str | os.PathLike, split: str) -> list[dict]:
    """Reads `landmarks/<split>.jsonl` of a WIDER-layout folder (one dict per image)."""
    path = landmarks_sidecar.path(root, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path}: landmarks sidecar not found; face crops need it. Create a synthetic set '
            'with: python tools/make_synthetic_wider.py --out DIR --train N --val M'
        )
    return [record for _, record in landmarks_sidecar.read(path)]


def make_face_crops(
    root: str | os.PathLike,
    split: str,
    size: int = 128,
    out_dir: str | os.PathLike | None = None,
    min_face_px: int = 8,
    skip_invalid: bool = True,
    threads: int = 2,
) -> FaceCrops:
    """Cuts every face of a WIDER-layout split with a landmarks sidecar into square crops.

    Args:
      root: WIDER-layout folder (`WIDER_<split>/images`, `wider_face_split`, `landmarks`).
      split: 'train' or 'val'.
      size: output crop side in pixels.
      out_dir: if given, the crops are also saved to `<out_dir>/<split>_<size>.npz`.
      min_face_px: faces narrower than this (box w) are skipped.
      skip_invalid: skip faces whose WIDER `invalid` attribute is 1.
      threads: image-decoding threads (the output does not depend on it).

    Returns:
      The crops, in txt order; `skipped` counts the faces left out and why.
    """
    txt, images_dir = wider.require_split(root, split)
    records = read_sidecar(root, split)
    anns = wider.read_bbx_gt(txt)
    if [a.name for a in anns] != [r['image'] for r in records]:
        raise ValueError(
            f'{txt} and the landmarks sidecar of {os.fspath(root)!r} list different images'
        )
    invalid_col = wider.ATTRIBUTE_NAMES.index('invalid')
    skipped = {'small': 0, 'invalid': 0}
    selected = []  # (image index, face index)
    for i, (ann, rec) in enumerate(zip(anns, records, strict=True)):
        if len(rec['faces']) != len(ann.boxes):
            raise ValueError(
                f'{rec["image"]}: {len(rec["faces"])} sidecar faces but {len(ann.boxes)} txt rows'
            )
        for j, face in enumerate(rec['faces']):
            if skip_invalid and ann.attributes[j, invalid_col]:
                skipped['invalid'] += 1
            elif face['box'][2] < min_face_px:
                skipped['small'] += 1
            else:
                selected.append((i, j))
    n = len(selected)
    crops = FaceCrops(
        images=np.zeros((n, size, size, 3), np.uint8),
        boxes=np.zeros((n, 4), np.float32),
        keypoints7=np.zeros((n, 7, 3), np.float32),
        landmarks68=np.zeros((n, 68, 2), np.float32),
        identity=np.zeros(n, np.int32),
        source_image=np.array([records[i]['image'] for i, _ in selected], dtype=str).reshape(n),
        face_index=np.array([j for _, j in selected], np.int32).reshape(n),
        crop_boxes=np.zeros((n, 4), np.int32),
        skipped=skipped,
    )
    by_image: dict[int, list[tuple[int, int]]] = {}
    for k, (i, j) in enumerate(selected):
        by_image.setdefault(i, []).append((k, j))

    def load(i: int) -> np.ndarray:  # EXIF orientation ignored, as the boxes assume.
        return images.read(root_paths.resolve_inside(images_dir, records[i]['image'], txt))

    order = list(by_image)
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        # Chunks bound the number of decoded images held at once.
        for start in range(0, len(order), 16):
            chunk = order[start : start + 16]
            for i, img in zip(chunk, pool.map(load, chunk), strict=True):
                _fill(crops, by_image[i], records[i]['faces'], img, size)
    if out_dir is not None:
        crops.save(os.path.join(os.fspath(out_dir), f'{split}_{size}.npz'))
    return crops


def _fill(
    crops: FaceCrops, items: list[tuple[int, int]], faces: list[dict], img: np.ndarray, size: int
) -> None:
    """Writes the crops of one image's faces (`items`: (output row, face index))."""
    for k, j in items:
        face = faces[j]
        x, y, w, h = face['box']
        c = crop_box(face['box'])
        crops.crop_boxes[k] = c
        crops.images[k] = cut(img, c, size)
        crops.boxes[k] = box_to_crop([x, y, x + w, y + h], c, size)
        crops.landmarks68[k] = points_to_crop(face['landmarks68'], c, size)
        kp = np.asarray(face['keypoints7'], np.float64)
        vis = kp[:, 2:] > 0
        crops.keypoints7[k] = np.concatenate(
            [np.where(vis, points_to_crop(kp[:, :2], c, size), 0.0), kp[:, 2:]], 1
        )
        crops.identity[k] = face['identity']


def subset_indices(total: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted int64 rows of a seeded random subset of `n` out of `total` items.

    The rows are the first `n` of one permutation drawn from `np.random.default_rng(seed)`, in
    increasing order: the subset depends only on `(total, n, seed)` (so it is the same faces
    for every crop size of FDF), and it is nested: for one seed, the subset of `n` lies inside
    that of any larger `n` (the paper's dataset-size study trains on growing subsets).

    Raises:
      ValueError: `n` is negative or larger than `total`.
    """
    total, n = int(total), int(n)
    if not 0 <= n <= total:
        raise ValueError(f'cannot take a subset of {n} out of {total} items')
    perm = np.random.default_rng(int(seed)).permutation(total)
    return np.sort(perm[:n]).astype(np.int64)


def subset(crops: FaceCrops, n: int, seed: int = 0, shuffle: bool = True) -> FaceCrops:
    """`n` faces of `crops`, kept in their order.

    Works on any `FaceCrops` (FDF, PIPA, synthetic); `skipped` is copied unchanged (it counts
    the faces left out when the full set was cut).

    Args:
      crops: the faces.
      n: how many to keep (0 <= n <= len(crops)).
      seed: the seed of the random subset (`subset_indices`).
      shuffle: True: a seeded random subset. False: the first `n` (what DeepPrivacy's
        `percentage` keeps); `seed` is then unused.

    Raises:
      ValueError: `n` is negative or larger than `len(crops)`.
    """
    if shuffle:
        rows = subset_indices(len(crops), n, seed)
    elif 0 <= n <= len(crops):
        rows = np.arange(int(n))
    else:
        raise ValueError(f'cannot take a subset of {n} out of {len(crops)} items')
    return dataclasses.replace(
        crops, **{k: getattr(crops, k)[rows] for k in _ARRAYS}, skipped=dict(crops.skipped)
    )


SOURCES = ('npz', 'fdf')
SYNTHETIC_HINT = (
    'make the synthetic crops with: python tools/make_synthetic_wider.py --out '
    'cache/synthetic_wider --train 1000 --val 300 --seed 0 --crops 128 (or `make demo`)'
)


def load_split(
    source: str, path: str | os.PathLike, split: str, limit: int = 0, size: int = 128
) -> FaceCrops:
    """The face crops of one split, as a GAN config names them (`config.data`).

    Args:
      source: 'npz' (`path` is a `FaceCrops` file of this split, e.g. the synthetic crops) or
        'fdf' (`path` is an FDF-layout folder, `fdf.read_fdf`).
      path: the file or folder.
      split: 'train' or 'val' (FDF's subfolder).
      limit: > 0: a seeded subset of this many faces (`subset_indices`, seed 0).
      size: the FDF image size to read.

    Raises:
      FileNotFoundError: a missing file or folder (for the synthetic crops, with the command
        that makes them).
      ValueError: an unknown source, bad data (naming the file), a limit above the count.
    """
    if source == 'npz':
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path}: face crops not found; {SYNTHETIC_HINT}')
        crops = FaceCrops.load(path)
        return subset(crops, int(limit), seed=0) if limit else crops
    if source == 'fdf':
        from safefakes_jax.data import fdf  # fdf imports this module.

        return fdf.read_fdf(path, split, size=size, limit=int(limit) or None, seed=0)
    raise ValueError(f'face-crop source must be one of {SOURCES}, got {source!r}')
