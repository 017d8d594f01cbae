"""Reader of the FDF face-crop dataset (Flickr Diverse Faces) in DeepPrivacy's refactored layout.

The layout (hukkelas/DeepPrivacy, `deep_privacy/dataset/fdf.py`, `custom.py`) of one split:

```
<root>/<split>/images/<size>/<i>.png      i = 0 .. N-1, RGB crops of size x size
<root>/<split>/landmarks.npy              float [N, 7, 2] (or [N, 14]) (x, y) in [0, 1] of the crop
<root>/<split>/bounding_box/<size>.npy    integer [N, 4] face box x1 y1 x2 y2 in crop pixels
<root>/<split>/bounding_box/<size>.torch  the same as a torch tensor (DeepPrivacy's own format)
```

The keypoints are the first 7 COCO keypoints (nose, left eye, right eye, left ear, right ear,
left shoulder, right shoulder: `face_crops.KEYPOINT_NAMES`), normalised by the crop side, the
same for every size. They become `FaceCrops` crop pixels with the pixel-centre convention of
`face_crops` and of the pipeline (`face_crop_pipeline`): `x_pixel = x_norm * size - 0.5`, the
inverse of the pipeline's `x_norm = (x_pixel + 0.5) / size` (so the stored [0, 1] values come
back unchanged). Which convention Mask R-CNN's keypoints (and so FDF's) really follow is not
stated by FDF; a half-pixel difference at 128 px is below the keypoints' own error.

A point is visible (flag 1) when both its coordinates lie in [0, 1]; NaN (a missing point) or a
point outside the crop is stored absent, `(0, 0, 0)`, as `face_crops` does. DeepPrivacy keeps
points outside the crop in training and drops them only when it draws the pose maps (points
outside [0, 1)), which comes to the same maps.

Deviations from DeepPrivacy, which asserts little and truncates annotations to the number of
images: every file is checked, and a missing file, a gap in the image indices, a non-integer
image name, annotations whose length differs from the number of images, an infinite keypoint,
a non-finite box, or a box that is empty or leaves the crop is an error naming the file (and
row). `bounding_box/<size>.npy` is read when it exists, without torch; the `.torch` file is
loaded only with `torch.load(weights_only=True)` (no pickled code) and needs torch installed.
DeepPrivacy's `percentage` keeps the *first* images; `limit` here takes a seeded random subset
(`face_crops.subset_indices`), the same faces for every size. DP-v1's older layout
(`landmarks/<size>.npy` in pixels, train and val in one folder) is not read.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from safefakes_jax.data import face_crops, images

NUM_KEYPOINTS = 7


def split_dir(root: str | os.PathLike, split: str) -> str:
    """`<root>/<split>`, checked to exist."""
    path = os.path.join(os.fspath(root), split)
    if not os.path.isdir(path):
        raise FileNotFoundError(f'{path}: FDF split folder not found (expected {split}/images/..)')
    return path


def image_paths(root: str | os.PathLike, split: str, size: int) -> list[str]:
    """The files `<split>/images/<size>/0.png .. (N-1).png` in index order.

    Raises:
      FileNotFoundError: no such folder, no PNG in it, or an index missing (names the file).
      ValueError: a PNG whose name is not a non-negative integer.
    """
    folder = os.path.join(split_dir(root, split), 'images', str(int(size)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{folder}: FDF image folder for size {size} not found')
    indices = []
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() != '.png':
            continue
        if not (stem.isascii() and stem.isdigit()):
            raise ValueError(
                f'{os.path.join(folder, name)}: FDF image names are integer indices (0.png, ...)'
            )
        indices.append(int(stem))
    if not indices:
        raise FileNotFoundError(f'{folder}: no .png images')
    indices.sort()
    n = len(indices)
    if indices[-1] != n - 1 or len(set(indices)) != n:
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise FileNotFoundError(
            f'{os.path.join(folder, f"{missing[0]}.png")}: missing; FDF images must be numbered '
            f'0 .. N-1 without gaps ({len(missing)} missing below {indices[-1]})'
        )
    return [os.path.join(folder, f'{i}.png') for i in range(n)]


def _load_npy(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: not found')
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f'{path}: not a readable .npy array without pickle ({e})') from None
    return _check_numeric(array, path)


def _load_torch(path: str) -> np.ndarray:
    try:
        import torch  # Optional: only DeepPrivacy's own box files need it.
    except ImportError:
        raise ImportError(
            f'{path}: reading a .torch box file needs torch, which is not installed. Install '
            'it, or convert the file once where torch is available: np.save("'
            f'{path[: -len(".torch")]}.npy", torch.load(PATH, weights_only=True).numpy())'
        ) from None
    try:
        tensor = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for bad files.
        raise ValueError(
            f'{path}: cannot be loaded with torch.load(weights_only=True) ({type(e).__name__}: '
            f'{e}); only plain tensors are accepted'
        ) from None
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f'{path}: expected a tensor, got {type(tensor).__name__}')
    return _check_numeric(tensor.numpy(), path)


def _check_numeric(array: np.ndarray, path: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f'{path}: expected a numeric array, got {array.dtype}')
    return array


def read_boxes(split_path: str, size: int, n: int) -> np.ndarray:
    """float32 [n, 4] boxes `x1 y1 x2 y2` in crop pixels from `bounding_box/<size>.npy|.torch`.

    Raises:
      FileNotFoundError: neither file exists.
      ValueError: wrong shape or length, non-finite values, or a box that is empty or leaves
        the `size` x `size` crop (the message names the file and the first bad row).
    """
    base = os.path.join(split_path, 'bounding_box', str(int(size)))
    if os.path.isfile(base + '.npy'):
        path, boxes = base + '.npy', _load_npy(base + '.npy')
    elif os.path.isfile(base + '.torch'):
        path, boxes = base + '.torch', _load_torch(base + '.torch')
    else:
        raise FileNotFoundError(f'{base}.npy (or .torch): FDF bounding boxes not found')
    if boxes.shape != (n, 4):
        raise ValueError(
            f'{path}: expected boxes of shape ({n}, 4) for {n} images, got {boxes.shape}'
        )
    boxes = boxes.astype(np.float64)
    x1, y1, x2, y2 = boxes.T
    bad = ~np.isfinite(boxes).all(1)
    bad |= (x1 < 0) | (y1 < 0) | (x2 > size) | (y2 > size) | (x2 <= x1) | (y2 <= y1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f'{path}: row {i}: box {boxes[i].tolist()} is not finite, empty, or outside the '
            f'{size} x {size} crop ({int(bad.sum())} bad rows)'
        )
    return boxes.astype(np.float32)


def read_keypoints(split_path: str, size: int, n: int) -> np.ndarray:
    """float32 [n, 7, 3] `(x, y, visible)` in crop pixels from `landmarks.npy` (module doc).

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: wrong shape or length, or an infinite coordinate (names file and row).
    """
    path = os.path.join(split_path, 'landmarks.npy')
    lm = _load_npy(path)
    if lm.shape == (n, 2 * NUM_KEYPOINTS):  # Flat rows x0 y0 x1 y1 ..; DeepPrivacy reshapes.
        lm = lm.reshape(n, NUM_KEYPOINTS, 2)
    if lm.shape != (n, NUM_KEYPOINTS, 2):
        raise ValueError(
            f'{path}: expected landmarks of shape ({n}, 7, 2) or ({n}, 14) for {n} images, '
            f'got {lm.shape}'
        )
    lm = lm.astype(np.float64)
    if np.isinf(lm).any():
        i = int(np.flatnonzero(np.isinf(lm).any((1, 2)))[0])
        raise ValueError(f'{path}: row {i}: infinite landmark {lm[i].tolist()}')
    with np.errstate(invalid='ignore'):
        visible = ((lm >= 0) & (lm <= 1)).all(-1)  # NaN compares False: absent.
    out = np.zeros((n, NUM_KEYPOINTS, 3), np.float32)
    out[..., :2] = np.where(visible[..., None], lm * size - 0.5, 0.0)
    out[..., 2] = visible
    return out


def read_fdf(
    root: str | os.PathLike,
    split: str,
    size: int = 128,
    limit: int | None = None,
    seed: int = 0,
    threads: int = 4,
) -> face_crops.FaceCrops:
    """Reads an FDF split (DeepPrivacy's refactored layout, module docstring) as `FaceCrops`.

    Args:
      root: the folder holding `train/` and `val/`.
      split: 'train' or 'val' (any sub-folder of that layout).
      size: the crop side to read (`images/<size>`, `bounding_box/<size>.*`).
      limit: if given, a seeded random subset of this many faces (`face_crops.subset_indices`:
        the same faces for every `size`, nested for growing `limit`), kept in index order.
        None reads all.
      seed: the seed of that subset.
      threads: PNG-decoding threads (the output does not depend on it).

    Returns:
      The crops: `boxes` from the box file, `keypoints7` from the landmarks, `identity` -1
      (FDF has no identity labels), `face_index` the FDF index `i`, `source_image`
      `<split>/images/<size>/<i>.png`, `landmarks68` NaN and `crop_boxes` zeros (unknown).

    Raises:
      FileNotFoundError, ValueError, images.ImageDecodeError: a missing or malformed file; the
        message names it.
    """
    size = int(size)
    split_path = split_dir(root, split)
    paths = image_paths(root, split, size)
    n_all = len(paths)
    boxes = read_boxes(split_path, size, n_all)
    keypoints = read_keypoints(split_path, size, n_all)
    rows = np.arange(n_all) if limit is None else face_crops.subset_indices(n_all, limit, seed)
    n = len(rows)
    out = np.empty((n, size, size, 3), np.uint8)

    def load(k: int) -> None:
        path = paths[rows[k]]
        img = images.read(path)
        if img.shape != (size, size, 3):
            raise ValueError(f'{path}: expected a {size} x {size} image, got {img.shape[:2]}')
        out[k] = img

    with concurrent.futures.ThreadPoolExecutor(max(1, int(threads))) as pool:
        for start in range(0, n, 4096):  # Bounded number of futures in flight.
            list(pool.map(load, range(start, min(start + 4096, n))))
    return face_crops.FaceCrops(
        images=out,
        boxes=boxes[rows],
        keypoints7=keypoints[rows],
        landmarks68=np.full((n, 68, 2), np.nan, np.float32),
        identity=np.full(n, -1, np.int32),
        source_image=np.array([f'{split}/images/{size}/{i}.png' for i in rows], dtype=str).reshape(
            n
        ),
        face_index=rows.astype(np.int32),
        crop_boxes=np.zeros((n, 4), np.int32),
    )
