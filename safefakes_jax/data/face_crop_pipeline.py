"""tf.data pipelines of face crops (`FaceCrops`) for GAN training (DeepPrivacy) and evaluation.

Batches are dicts of fixed-shape arrays (B = the per-host batch, R = `resolution`):

* `image`: uint8 [B, R, R, 3] RGB, the crop resized from its side S to R (INTER_AREA when
  shrinking, INTER_LINEAR when growing).
* `box`: int32 [B, 4] `x1 y1 x2 y2` in R pixels, the region to inpaint: the face box times
  R / S, floored (as DeepPrivacy made its per-size `bounding_box/<size>` files), jittered
  when training, clipped to [0, R], at least 1 px wide and high.
* `keypoints`: float32 [B, 7, 2] normalised `(x, y)`, `x_norm = (x_pixel + 0.5) / S` with
  `x_pixel` the OpenCV pixel-centre coordinate in the S-pixel crop (a point at the centre of
  pixel 0 is `0.5 / S`; the value is the same at every resolution). NaN for absent points.
  Visible points outside the crop (shoulders) keep values outside [0, 1]; DeepPrivacy drops
  them when it draws its pose maps.
* `landmarks68` (only with `landmarks68=True`, for Sun2018): float32 [B, 68, 2], the crop's
  68 landmarks normalised as the keypoints (`(x_pixel + 0.5) / S`), NaN where absent (FDF has
  none: `fdf.read_fdf` gives NaN).
* `position`: int64 [B], the example's stream position (-1 for padding).
* `index`: int64 [B], the example's row in `crops` (-1 for padding).
* `valid`: bool [B], False for padding (evaluation only; always True in training).

Hosts: the rows are split into `process_count` contiguous, disjoint blocks that cover the set
(as `tfds.even_splits`); host `process_index` reads its block. `batch_size` is per host.

Training (`train=True`) is an endless stream. Example `j` of epoch `e` has position `e * n + j`
(n = the host's rows); epoch `e` visits the rows in a permutation drawn from
`(seed, process_index, e)`; the augmentation of an example comes from
`np.random.default_rng([seed, process_index, position])`. The stream is therefore a pure
function of the position: `start_position = k` yields exactly the examples an uninterrupted
stream yields from position k on (resume with 1 + the last position trained on), whatever
the thread scheduling.

Augmentation follows DeepPrivacy v1 (hukkelas/DeepPrivacy at 3516f6f,
`deep_privacy/data_tools/dataloaders.py`: `DeepPrivacyDataset.__getitem__` and
`bounding_box_data_augmentation`), in its order:

1. Box jitter: one `s ~ U(-box_jitter, box_jitter)` per example (0.02 in DP-v1); `dw =
   trunc(s * w)`, `dh = trunc(s * h)` (torch `.long()`); `x1 -= dw, y1 -= dh, x2 += dw,
   y2 += dh`; clipped to [0, R]. The box grows or shrinks about its centre by one fraction
   in x and y, each edge by at most `box_jitter` of the box's width (x) or height (y), in whole
   pixels (a box under 1 / box_jitter = 50 px never moves). It is not an independent move of
   each edge.
2. Horizontal flip with p = 0.5: the image mirrored, `x1' = R - x2, x2' = R - x1`, keypoints
   `x' = 1 - x` (the mirror of a pixel centre under the convention above) **without** swapping
   the left/right keypoint channels (so the v1 checkpoints' pose channels keep their meaning).
   The 68 landmarks (when asked for) are mirrored the same way, `x' = 1 - x`, and their indices
   permuted by `LANDMARKS68_MIRROR` (jaw 0 <-> 16, eye 36 <-> 45, ...), so that each of
   Sun2018's landmark maps keeps its facial meaning (our choice; nothing to stay compatible
   with).

DP-v2 (`configs/fdf/base.py`) keeps only the flip; `box_jitter=0` gives that. Deviations: the
1 px minimum (v1 leaves an empty box empty, which valid crops never produce); FDF's own
lower-resolution files (`dataset_tools/fdf/generate_dataset.py`) are 2 x 2 average pools
truncated to uint8, where INTER_AREA rounds (at most 1 grey level apart).

Evaluation (`train=False`): one pass over the host's rows in order, no augmentation, the last
batch filled with padding (`valid` False, zero image, box `[0, 0, 1, 1]`, NaN keypoints); every
host yields `num_eval_batches(...)` batches so collective steps line up.

Rows are gathered and resized in a `tf.numpy_function` from the arrays of `crops` held in
memory (no copy into the TF graph, whose protos stop at 2 GB). TensorFlow is kept off the GPUs
(JAX owns them) and its C++ logging quiet (`TF_CPP_MIN_LOG_LEVEL=2` unless set).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterator

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before TensorFlow loads.

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from safefakes_jax.data import detection_pipeline, face_crops, tfds_wider  # noqa: E402

tfds_wider.hide_gpus_from_tf()

NUM_KEYPOINTS = 7
DP_V1_BOX_JITTER = 0.02
NUM_LANDMARKS = 68
_FIELDS = ('image', 'box', 'keypoints', 'position', 'index', 'valid')
_DTYPES = (tf.uint8, tf.int32, tf.float32, tf.int64, tf.int64, tf.bool)


def _landmarks68_mirror() -> tuple[int, ...]:
    """dlib's 68-point index of each landmark's mirror image (an involution)."""
    perm = list(range(NUM_LANDMARKS))
    pairs = [(i, 16 - i) for i in range(8)]  # Jaw.
    pairs += [(17 + i, 26 - i) for i in range(5)]  # Eyebrows.
    pairs += [(31, 35), (32, 34)]  # Lower nose (the bridge 27-30 and 33 stay).
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # Eyes.
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # Outer lips.
    pairs += [(60, 64), (61, 63), (65, 67)]  # Inner lips.
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


LANDMARKS68_MIRROR = _landmarks68_mirror()


def host_rows(num_examples: int, process_index: int, process_count: int) -> np.ndarray:
    """int64 rows of host `process_index`: contiguous blocks whose sizes differ by at most 1."""
    return np.array_split(np.arange(num_examples, dtype=np.int64), process_count)[process_index]


def num_eval_batches(num_examples: int, batch_size: int, process_count: int) -> int:
    """Batches every host yields in evaluation (the same on all hosts, at least 1)."""
    return max(1, math.ceil(math.ceil(num_examples / process_count) / batch_size))


def normalised_keypoints(keypoints7: np.ndarray, size: int) -> np.ndarray:
    """float32 [..., 7, 2] `(x + 0.5) / size` of `(x, y, visible)` crop pixels; NaN if absent."""
    kp = np.asarray(keypoints7, np.float64)
    out = (kp[..., :2] + 0.5) / size
    return np.where(kp[..., 2:] > 0, out, np.nan).astype(np.float32)


def _at_least_1px(boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Boxes [..., 4] (int, inside [0, R]) widened to >= 1 px, staying inside [0, R]."""
    b = boxes.copy()
    for lo, hi in ((0, 2), (1, 3)):
        empty = b[..., hi] <= b[..., lo]
        b[..., hi] = np.where(empty, np.minimum(b[..., lo] + 1, resolution), b[..., hi])
        b[..., lo] = np.where(empty, b[..., hi] - 1, b[..., lo])
    return b


def scaled_boxes(boxes: np.ndarray, size: int, resolution: int) -> np.ndarray:
    """int64 [..., 4] `floor(box * R / S)` of float crop-pixel boxes, clipped, >= 1 px."""
    b = np.floor(np.asarray(boxes, np.float64) * (resolution / size)).astype(np.int64)
    return _at_least_1px(np.clip(b, 0, resolution), resolution)


def jitter_box(box: np.ndarray, shrink: float, resolution: int) -> np.ndarray:
    """DP-v1's box jitter (module docstring) of one int box with the drawn fraction `shrink`."""
    box = np.asarray(box, np.int64)
    dw = int(np.trunc(shrink * float(box[2] - box[0])))
    dh = int(np.trunc(shrink * float(box[3] - box[1])))
    out = box + np.array([-dw, -dh, dw, dh], np.int64)
    return _at_least_1px(np.clip(out, 0, resolution), resolution)


def flip_example(
    image: np.ndarray, box: np.ndarray, keypoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirrors an R x R image, its box and normalised keypoints (channels not swapped)."""
    r = image.shape[1]
    box = np.array([r - box[2], box[1], r - box[0], box[3]], box.dtype)
    keypoints = keypoints.copy()
    keypoints[:, 0] = 1.0 - keypoints[:, 0]
    return image[:, ::-1], box, keypoints


def flip_landmarks68(landmarks: np.ndarray) -> np.ndarray:
    """Mirrors normalised [68, 2] landmarks: `x' = 1 - x`, indices by `LANDMARKS68_MIRROR`."""
    out = np.asarray(landmarks)[list(LANDMARKS68_MIRROR)].copy()
    out[:, 0] = 1.0 - out[:, 0]
    return out


def normalised_landmarks68(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """float32 [..., 68, 2] `(x + 0.5) / size` of crop-pixel landmarks; NaN stays NaN."""
    return ((np.asarray(landmarks68, np.float64) + 0.5) / size).astype(np.float32)


def _resize(image: np.ndarray, resolution: int) -> np.ndarray:
    if image.shape[0] == resolution:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > resolution else cv2.INTER_LINEAR
    return cv2.resize(image, (resolution, resolution), interpolation=interp)


class _Examples:
    """The examples of one host as a pure function of their stream positions."""

    def __init__(
        self, crops, rows, resolution, seed, process_index, train, flip, box_jitter, landmarks68
    ):
        self.images, self.boxes, self.keypoints7 = crops.images, crops.boxes, crops.keypoints7
        self.landmarks68 = crops.landmarks68 if landmarks68 else None
        self.size = crops.images.shape[1]
        self.rows, self.resolution = rows, resolution
        self.seed, self.process_index = seed, process_index
        self.train, self.flip, self.box_jitter = train, flip, box_jitter
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._permutations.get(epoch)
        if perm is None:
            ss = np.random.SeedSequence([self.seed, self.process_index, epoch], spawn_key=(1,))
            perm = np.random.default_rng(ss).permutation(len(self.rows))
            with self._lock:
                if len(self._permutations) >= 4:  # Batches in flight span at most 2 epochs.
                    self._permutations.pop(min(self._permutations))
                self._permutations[epoch] = perm
        return perm

    def row(self, position: int) -> int:
        """The row of `crops` at `position` (-1: evaluation padding)."""
        if self.train:
            epoch, j = divmod(position, len(self.rows))
            return int(self.rows[self._permutation(epoch)[j]])
        return int(self.rows[position]) if position < len(self.rows) else -1

    def batch(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        r = self.resolution
        b = len(positions)
        image = np.zeros((b, r, r, 3), np.uint8)
        box = np.tile(np.array([0, 0, 1, 1], np.int32), (b, 1))
        keypoints = np.full((b, NUM_KEYPOINTS, 2), np.nan, np.float32)
        index = np.array([self.row(int(p)) for p in positions], np.int64)
        valid = index >= 0
        rows = index[valid]
        boxes = scaled_boxes(self.boxes[rows], self.size, r)
        kps = normalised_keypoints(self.keypoints7[rows], self.size)
        lms = landmarks = None
        if self.landmarks68 is not None:
            landmarks = np.full((b, NUM_LANDMARKS, 2), np.nan, np.float32)
            lms = normalised_landmarks68(self.landmarks68[rows], self.size)
        for k, i in enumerate(np.flatnonzero(valid)):
            img, bx, kp = _resize(self.images[rows[k]], r), boxes[k], kps[k]
            lm = None if lms is None else lms[k]
            if self.train:
                rng = np.random.default_rng([self.seed, self.process_index, int(positions[i])])
                shrink = rng.uniform(-self.box_jitter, self.box_jitter)
                do_flip = rng.random() < 0.5
                if self.box_jitter:
                    bx = jitter_box(bx, shrink, r)
                if self.flip and do_flip:
                    img, bx, kp = flip_example(img, bx, kp)
                    lm = None if lm is None else flip_landmarks68(lm)
            image[i], box[i], keypoints[i] = img, bx, kp
            if lm is not None:
                landmarks[i] = lm
        position = np.where(valid, np.asarray(positions, np.int64), -1)
        out = (image, box, keypoints, position, index, valid)
        return out if landmarks is None else (*out, landmarks)


def _check_crops(crops: face_crops.FaceCrops) -> None:
    """Checks the arrays the pipeline reads."""
    n = len(crops.images)
    im = crops.images
    if im.dtype != np.uint8 or im.ndim != 4 or im.shape[1] != im.shape[2] or im.shape[3] != 3:
        raise ValueError(f'crops.images must be uint8 [N, S, S, 3], got {im.dtype} {im.shape}')
    if crops.boxes.shape != (n, 4):
        raise ValueError(f'crops.boxes must be [{n}, 4], got {crops.boxes.shape}')
    if crops.keypoints7.shape != (n, NUM_KEYPOINTS, 3):
        raise ValueError(f'crops.keypoints7 must be [{n}, 7, 3], got {crops.keypoints7.shape}')
    if not np.isfinite(crops.boxes).all():
        raise ValueError('crops.boxes has non-finite values')


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = True
    return options


def _to_dict(positions, *, examples: _Examples, batch_size: int) -> dict:
    fields, dtypes = _FIELDS, _DTYPES
    r = examples.resolution
    shapes = ([r, r, 3], [4], [NUM_KEYPOINTS, 2], [], [], [])
    if examples.landmarks68 is not None:
        fields, dtypes = (*fields, 'landmarks68'), (*dtypes, tf.float32)
        shapes = (*shapes, [NUM_LANDMARKS, 2])
    outs = tf.numpy_function(examples.batch, [positions], list(dtypes), stateful=False)
    return {
        name: tf.ensure_shape(t, [batch_size, *shape])
        for name, t, shape in zip(fields, outs, shapes, strict=True)
    }


def make_gan_dataset(
    crops: face_crops.FaceCrops,
    batch_size: int,
    resolution: int,
    seed: int,
    *,
    train: bool = True,
    start_position: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    flip: bool = True,
    box_jitter: float = DP_V1_BOX_JITTER,
    landmarks68: bool = False,
) -> tf.data.Dataset:
    """The face-crop pipeline of one host (module docstring for the batch contract).

    Args:
      crops: the faces (`FaceCrops`: `images`, `boxes`, `keypoints7` are read), held in
        memory and not copied.
      batch_size: per-host batch (global batch // process count).
      resolution: output side R.
      seed: non-negative; seeds the shuffle and every example's augmentation.
      train: True: endless shuffled, augmented stream, full batches. False: one pass in order,
        no augmentation, the last batch padded (`valid`).
      start_position: training only: the first stream position (resume: 1 + the largest
        `position` this host has trained on).
      process_index: this host (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).
      flip: training: DP-v1's horizontal flip with p = 0.5.
      box_jitter: training: DP-v1's box jitter fraction (0.02; 0 turns it off, as DP-v2).
      landmarks68: also yield `landmarks68` (read from `crops.landmarks68`; Sun2018).

    Returns:
      A `tf.data.Dataset` of dicts with static shapes (`as_numpy_batches` iterates it).

    Raises:
      ValueError: bad arguments, malformed `crops`, or no rows for this host when training.
    """
    _check_crops(crops)
    pi, pc = detection_pipeline.host(process_index, process_count)
    batch_size, resolution, seed = int(batch_size), int(resolution), int(seed)
    if batch_size < 1 or resolution < 1:
        raise ValueError(f'batch_size and resolution must be >= 1, got {batch_size}, {resolution}')
    if seed < 0 or start_position < 0:
        raise ValueError(f'seed and start_position must be >= 0, got {seed}, {start_position}')
    if not 0 <= box_jitter < 0.5:
        raise ValueError(f'box_jitter must be in [0, 0.5), got {box_jitter}')
    if not train and start_position:
        raise ValueError('start_position is for the training stream; evaluation always starts at 0')
    rows = host_rows(len(crops), pi, pc)
    if landmarks68 and crops.landmarks68.shape != (len(crops), NUM_LANDMARKS, 2):
        raise ValueError(
            f'crops.landmarks68 must be [{len(crops)}, 68, 2], got {crops.landmarks68.shape}'
        )
    examples = _Examples(
        crops, rows, resolution, seed, pi, bool(train), bool(flip), float(box_jitter),
        bool(landmarks68),
    )  # fmt: skip
    if train:
        if not len(rows):
            raise ValueError(f'host {pi} of {pc} has no examples ({len(crops)} crops)')
        ds = tf.data.Dataset.range(int(start_position), 2**62)
    else:
        ds = tf.data.Dataset.range(num_eval_batches(len(crops), batch_size, pc) * batch_size)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(
        functools.partial(_to_dict, examples=examples, batch_size=batch_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def as_numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Iterates `ds` as dicts of numpy arrays."""
    yield from ds.as_numpy_iterator()
