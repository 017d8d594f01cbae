"""DSFD multi-scale + flip test-time detection (yxlijun/DSFD.pytorch `tools/wider_test.py`).

The procedure (`../shared/reference/dsfd.md` §9), on an RGB uint8 image of H x W pixels:

* max = sqrt(1500 * 1000 / (H * W)), shrink = min(1, max);
* det0 at shrink; det1 on the horizontally flipped image, mapped back (x1' = W - x2,
  x2' = W - x1);
* det_s at st = 0.5 (0.5 * max if max < 0.75), keeping boxes whose larger side > 30;
* det_b at bt = min(2, max) if max > 1 else (st + max) / 2; if max > 2, also 2 bt, 4 bt, ...
  while below max, then max itself. If the last bt > 1 (i.e. max > 1) det_b keeps boxes whose
  smaller side < 100, otherwise those whose larger side > 30. Sides are x2 - x1 + 1.
* every pass: `cv2.resize(fx=fy=scale, INTER_LINEAR)`, shot-2 softmax, face score > 0.05,
  NMS 0.3 (continuous IoU) over the top 5000, at most 750 kept, boxes divided by the scale;
* box voting (`postprocess.box_voting`) over all passes stacked; the first 750 are returned.

`scale_schedule` is that schedule as a pure function; `detect_at_scale` runs one pass;
`detect_multiscale` runs them all. The network is any `predict(uint8 [1, H, W, 3]) ->
(loc2 [1, A, 4], conf2 [1, A, 2])` returning numpy; `make_predict` builds one from a Flax DSFD.

Deviations from yx:

* Static shapes. yx runs the network at every exact resized size; under jit that would compile
  once per image and scale. Each resized image is padded at the bottom / right with the RGB mean
  (zero after mean subtraction, the value yx's conv zero padding sees past the border) up to a
  multiple of `bucket` (default 128) on each side, at least 32. The anchors are those of the
  padded size (cached per size); their pixel centres, (j + .5) * step, are yx's, so inside the
  image the grids coincide. Every pass has area <= 1500 * 1000 before padding, so the number
  of padded shapes is bounded: 48 for 1024-px-wide images (WIDER) of any height from 300 to
  2600, 16 with `max_side=1024`; `bucket=1` runs yx's exact sizes (at least 32). Receptive
  fields near the bottom / right edge differ slightly from yx's.
* Detections whose centre lies in the padding are dropped before NMS; after NMS boxes are
  clipped to the resized image (yx does not clip; `clip=False` keeps yx's unclipped boxes).
* `max_side` (default None = yx): a pass whose resized longer side would exceed it runs at the
  scale that makes that side `max_side`; the keep rules stay those of the uncapped schedule
  and capped det_b passes that coincide run once. Meant for CPU runs (2x of a 1024 image).
* A pass whose resized image would have a side below 1 px is skipped (cv2 would fail).
* No voted cluster gives an empty [0, 5] array (yx raises NameError; see `postprocess`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from safefakes_jax.detection import anchors as anchors_lib
from safefakes_jax.detection import postprocess
from safefakes_jax.models import dsfd
from safefakes_jax.models.dsfd import RGB_MEAN, preprocess

TARGET_AREA = 1500 * 1000
KEEP_ALL, KEEP_LARGE, KEEP_SMALL = 'all', 'large', 'small'
LARGE_MIN = 30  # KEEP_LARGE: larger side > 30 px.
SMALL_MAX = 100  # KEEP_SMALL: smaller side < 100 px.
MIN_SIDE = 32  # Smallest input DSFD accepts.

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ScalePass(NamedTuple):
    """One test-time pass: resize factor, horizontal flip, and which boxes it keeps."""

    scale: float
    flip: bool = False
    keep: str = KEEP_ALL


def scale_schedule(
    height: int, width: int, max_side: int | None = None
) -> tuple[float, list[ScalePass]]:
    """The passes of yx `wider_test.py` for an image of `height` x `width` pixels.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        max_side: optional cap on a pass's resized longer side (module docstring).

    Returns:
        (shrink, passes): shrink = min(1, max) (capped like the passes); passes in yx order:
        det0 (shrink), det1 (shrink, flipped), det_s (st, KEEP_LARGE), det_b (bt, ...).
    """
    mx = math.sqrt(TARGET_AREA / (height * width))
    shrink = min(1.0, mx)
    st = 0.5 if mx >= 0.75 else 0.5 * mx
    bt = min(2.0, mx) if mx > 1 else (st + mx) / 2
    big = [bt]
    if mx > 2:
        bt *= 2
        while bt < mx:
            big.append(bt)
            bt *= 2
        big.append(mx)
    big_keep = KEEP_SMALL if bt > 1 else KEEP_LARGE
    cap = math.inf if max_side is None else max_side / max(height, width)
    shrink = min(shrink, cap)
    big = list(dict.fromkeys(min(s, cap) for s in big))  # Capped duplicates run once.
    passes = [ScalePass(shrink), ScalePass(shrink, True), ScalePass(min(st, cap), keep=KEEP_LARGE)]
    return shrink, passes + [ScalePass(s, keep=big_keep) for s in big]


def padded_shape(height: int, width: int, bucket: int = 128) -> tuple[int, int]:
    """(height, width) rounded up to multiples of `bucket`, at least `MIN_SIDE`."""
    if bucket < 1:
        raise ValueError(f'bucket must be >= 1, got {bucket}')
    return tuple(max(MIN_SIDE, -(-int(n) // bucket) * bucket) for n in (height, width))


def pad_to_bucket(image: np.ndarray, bucket: int = 128) -> np.ndarray:
    """Pads an RGB uint8 [H, W, 3] image at the bottom / right with the RGB mean colour."""
    h, w = image.shape[:2]
    out = np.empty((*padded_shape(h, w, bucket), 3), np.uint8)
    out[...] = np.round(RGB_MEAN).astype(np.uint8)
    out[:h, :w] = image
    return out


@functools.lru_cache(maxsize=128)
def padded_anchors(height: int, width: int, aspect_ratio: float = 1.0) -> np.ndarray:
    """Shot-2 anchors [A, 4] (normalised cx cy w h) of a `height` x `width` network input."""
    a = anchors_lib.anchor_boxes(
        (height, width),
        sizes=anchors_lib.SIZES,
        aspect_ratio=aspect_ratio,
        feature_maps=dsfd.feature_map_sizes(height, width),
    )
    a.setflags(write=False)
    return a


def flip_boxes(dets: np.ndarray, width: float) -> np.ndarray:
    """Maps boxes [N, 4+] of a horizontally flipped image back: x1' = W - x2, x2' = W - x1."""
    out = np.array(dets, np.float64, copy=True)
    out[:, 0], out[:, 2] = width - out[:, 2], width - out[:, 0]
    return out


def keep_filter(dets: np.ndarray, keep: str) -> np.ndarray:
    """Applies a pass's keep rule to [N, 5] rows; sides are x2 - x1 + 1 (yx)."""
    if keep == KEEP_ALL:
        return dets
    sides = np.stack([dets[:, 2] - dets[:, 0] + 1, dets[:, 3] - dets[:, 1] + 1], axis=1)
    if keep == KEEP_LARGE:
        return dets[sides.max(axis=1) > LARGE_MIN]
    if keep == KEEP_SMALL:
        return dets[sides.min(axis=1) < SMALL_MAX]
    raise ValueError(f'unknown keep rule {keep!r}')


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}')
    return image


def detect_at_scale(
    image: np.ndarray,
    predict: Predict,
    scale: float,
    *,
    flip: bool = False,
    aspect_ratio: float = 1.0,
    conf_thresh: float = postprocess.CONF_THRESH,
    bucket: int = 128,
    clip: bool = True,
) -> np.ndarray:
    """One pass (yx `detect_face` / `flip_test`) on the padded, resized image.

    Args:
        image: RGB uint8 [H, W, 3].
        predict: `uint8 [1, Hp, Wp, 3] -> (loc2 [1, A, 4], conf2 [1, A, 2] logits)`.
        scale: resize factor (cv2 `fx = fy = scale`, linear).
        flip: run on the horizontally flipped image and map the boxes back.
        aspect_ratio: anchor height / width (1.0 yx, 1.5 paper).
        conf_thresh: keep faces with probability > this.
        bucket: padded sides are multiples of this.
        clip: clip boxes to the resized image before scaling back.

    Returns:
        float64 [N, 5] (x1, y1, x2, y2, score) in original-image pixels, descending score.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    if min(h, w) * scale < 0.5:
        return np.zeros((0, 5), np.float64)
    img = cv2.flip(image, 1) if flip else image
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    rh, rw = img.shape[:2]
    padded = pad_to_bucket(img, bucket)
    hp, wp = padded.shape[:2]
    loc, conf = predict(padded[None])
    loc, conf = np.asarray(loc, np.float64)[0], np.asarray(conf, np.float64)[0]
    anchors = padded_anchors(hp, wp, float(aspect_ratio))
    if loc.shape[0] != anchors.shape[0]:
        raise ValueError(
            f'predict gave {loc.shape[0]} anchors for {hp}x{wp}, expected {anchors.shape[0]}'
        )
    e = np.exp(conf - conf.max(axis=-1, keepdims=True))
    scores = e[:, 1] / e.sum(axis=-1)
    sel = np.flatnonzero(scores > conf_thresh)
    boxes = postprocess.decode_np(loc[sel], anchors[sel]) * np.array([wp, hp, wp, hp])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centre[:, 0] < rw) & (centre[:, 1] < rh)  # Padding is bottom / right only.
    boxes, scores = boxes[inside], scores[sel][inside]
    kept = postprocess.nms(boxes, scores)
    boxes, scores = boxes[kept], scores[kept]
    if clip:
        boxes = np.clip(boxes, 0, np.array([rw, rh, rw, rh], np.float64))
    dets = np.concatenate([boxes / scale, scores[:, None]], axis=1)
    return flip_boxes(dets, w) if flip else dets


def detect_multiscale(
    image_rgb_uint8: np.ndarray,
    predict: Predict,
    *,
    aspect_ratio: float = 1.0,
    conf_thresh: float = postprocess.CONF_THRESH,
    bucket: int = 128,
    max_side: int | None = None,
    clip: bool = True,
) -> np.ndarray:
    """yx multi-scale + flip test with box voting (module docstring).

    Args:
        image_rgb_uint8: RGB uint8 [H, W, 3].
        predict: see `detect_at_scale`.
        aspect_ratio, conf_thresh, bucket, clip: see `detect_at_scale`.
        max_side: cap on a pass's resized longer side (None: yx's schedule).

    Returns:
        float64 [N, 5] (x1, y1, x2, y2, score) in original pixels, N <= 750; [0, 5] if none.
    """
    image = _check_image(image_rgb_uint8)
    _, passes = scale_schedule(image.shape[0], image.shape[1], max_side)
    dets = [
        keep_filter(
            detect_at_scale(
                image,
                predict,
                p.scale,
                flip=p.flip,
                aspect_ratio=aspect_ratio,
                conf_thresh=conf_thresh,
                bucket=bucket,
                clip=clip,
            ),
            p.keep,
        )
        for p in passes
    ]
    return postprocess.box_voting(np.concatenate(dets, axis=0))


def make_predict(model: Any, params: Any) -> Predict:
    """A numpy `predict` for `detect_multiscale` from a Flax DSFD (jit, one compile per shape).

    Args:
        model: e.g. `dsfd.DSFD(...)`; its `dtype` (if any) is the compute dtype.
        params: its parameters.

    Returns:
        `predict(uint8 [1, H, W, 3]) -> (loc2, conf2)` numpy arrays; `predict.jitted` is the
        jitted `(params, images) -> (loc2, conf2)` function.
    """
    dtype = getattr(model, 'dtype', jnp.float32)

    @jax.jit
    def jitted(p, images):
        out = model.apply({'params': p}, preprocess(images, dtype))
        return out['loc2'], out['conf2']

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loc, conf = jax.device_get(jitted(params, images))
        return np.asarray(loc), np.asarray(conf)

    predict.jitted = jitted
    return predict
