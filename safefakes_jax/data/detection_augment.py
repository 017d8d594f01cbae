"""DSFD training augmentation on numpy arrays: crop geometry, rendering, photometric distortion.

Follows yxlijun/DSFD.pytorch `utils/augmentations.py` `preprocess` (reference: dsfd.md §7):
photometric distortion, then data-anchor-sampling (DAS) or an SSD-style square crop, a resize to
`out_size` x `out_size` with a random interpolation and a horizontal mirror. The work is split in
two cheap steps so that a 1024 px image is never resized to a large canvas:

1. `sample_geometry` (boxes only): draws every random choice of one example and returns the crop
   *window* in original-image pixels (integers; it may reach past the top/left edge, where the
   reference pads), the transformed boxes, the interpolation, the mirror flag and the photometric
   parameters.
2. `render` (pixels): resizes the part of the window that lies inside the image (the caller
   decodes only that part, e.g. with `tf.io.decode_and_crop_jpeg`) straight to the output scale,
   applies the photometric distortion to it, pastes it on a `pad_value` canvas and mirrors.

Deviations from the reference, all deliberate:

* The photometric distortion runs after the crop on the output-size pixels (cheaper). Contrast
  therefore uses the mean grey of the crop instead of the whole image, and padding keeps exactly
  `pad_value`.
* The window is snapped to whole source pixels; boxes are transformed with the snapped window,
  so they stay exact. The reference crops at whole pixels of the *scaled* image.
* One resize with one interpolation drawn from the five cv2 ones (the reference resizes twice in
  the DAS branch: a random cv2 interpolation, then a random PIL filter).
* Boxes are clipped to the output image in both branches (the reference leaves DAS boxes
  unclipped) and faces with an area under `min_face_px`² at output scale are dropped in both
  branches (the reference measures DAS faces at the intermediate scale).
* Where the reference resamples another image because no face survived, this keeps the example
  with a deterministic fall-back: the whole image; if even there no face is big enough, the
  example has no boxes (the DSFD loss adds no negatives for such an image).
* The padding colour defaults to the RGB mean (123, 117, 104): zero after the mean subtraction
  the model applies. The reference writes (104, 117, 123) into its RGB array.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import cv2
import numpy as np

DAS_ANCHORS = (16, 32, 64, 128, 256, 512)
# cv2 interpolations drawn uniformly (the reference's DAS set; its PIL set is similar).
INTERPOLATIONS = (
    cv2.INTER_LINEAR,
    cv2.INTER_CUBIC,
    cv2.INTER_AREA,
    cv2.INTER_NEAREST,
    cv2.INTER_LANCZOS4,
)
RGB_MEAN = (123, 117, 104)
_MAX_SCALED_PIXELS = 12000.0 * 12000.0  # DAS cap on the virtual scaled image (reference).
_TRIES = 50
# Photometric parameter vector: [order, brightness, contrast, saturation, hue]. A factor of 1
# (hue 0) means the op did not fire. order 1: B C S H; order 0: B S H C (reference).
PHOTOMETRIC_IDENTITY = np.array([1.0, 1.0, 1.0, 1.0, 0.0], np.float32)

_warned_lock = threading.Lock()
_warned = False


@dataclasses.dataclass
class Geometry:
    """The random geometry of one augmented example.

    Attributes:
      window: int64 [4] `x0 y0 x1 y1` in source pixels, mapped onto the whole output image
        (`x1 > x0`, `y1 > y0`; may lie partly outside the source, which is then padded).
      boxes: float32 [M, 4] `x1 y1 x2 y2` in output pixels, inside `[0, out_size]`, mirrored.
      interpolation: a cv2 interpolation flag.
      mirror: flip left-right.
      photometric: float32 [5], see `PHOTOMETRIC_IDENTITY`.
      branch: 'das', 'ssd' or 'whole' (fall-back), for tests and statistics.
    """

    window: np.ndarray
    boxes: np.ndarray
    interpolation: int
    mirror: bool
    photometric: np.ndarray
    branch: str


def _iou_one_to_many(rect: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Continuous IoU between `rect` [..., 4] and `boxes` [N, 4] (xyxy), shape [..., N]."""
    rect = rect[..., None, :]
    iw = np.clip(
        np.minimum(rect[..., 2], boxes[:, 2]) - np.maximum(rect[..., 0], boxes[:, 0]), 0, None
    )
    ih = np.clip(
        np.minimum(rect[..., 3], boxes[:, 3]) - np.maximum(rect[..., 1], boxes[:, 1]), 0, None
    )
    inter = iw * ih
    area_r = (rect[..., 2] - rect[..., 0]) * (rect[..., 3] - rect[..., 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_r + area_b - inter, 1e-12)


def _fully_inside(rect: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[..., N] whether each box lies inside `rect` [..., 4] (edges included)."""
    rect = rect[..., None, :]
    return (
        (rect[..., 0] <= boxes[:, 0])
        & (rect[..., 1] <= boxes[:, 1])
        & (rect[..., 2] >= boxes[:, 2])
        & (rect[..., 3] >= boxes[:, 3])
    )


def data_anchor_sampling(
    boxes: np.ndarray, width: int, height: int, rng: np.random.Generator, out_size: int = 640
) -> np.ndarray | None:
    """Data-anchor-sampling window (PyramidBox / DSFD), in source pixels.

    Args:
      boxes: float [N, 4] `x1 y1 x2 y2` source pixels, N >= 1.
      width: source image width.
      height: source image height.
      rng: the example's generator.
      out_size: side of the window in the virtual scaled image (the reference's 640).

    Returns:
      int64 [4] `x0 y0 x1 y1` (top/left may be negative), or None when none of the 50 tries is
      accepted (a face fully inside or IoU > 0.7 with one).
    """
    k = int(rng.integers(len(boxes)))
    bw_px = boxes[k, 2] - boxes[k, 0]
    bh_px = boxes[k, 3] - boxes[k, 1]
    side = float(np.sqrt((bw_px + 1.0) * (bh_px + 1.0)))
    nearest = int(np.argmin(np.abs(np.asarray(DAS_ANCHORS, np.float64) - side)))
    target = DAS_ANCHORS[int(rng.integers(min(nearest + 1, 5) + 1))]
    ratio = target / side * 2.0 ** rng.uniform(-1.0, 1.0)
    if height * ratio * width * ratio > _MAX_SCALED_PIXELS:
        ratio = float(np.sqrt(_MAX_SCALED_PIXELS / (height * width)))
    # The reference resizes with cv2 (output size rounded), then works in scaled pixels.
    sw, sh = max(int(round(width * ratio)), 1), max(int(round(height * ratio)), 1)
    sboxes = boxes * ratio
    xmin, ymin = sboxes[k, 0], sboxes[k, 1]
    bw, bh = bw_px * ratio + 1.0, bh_px * ratio + 1.0
    w = h = float(out_size)
    if w < max(sh, sw):
        lo_x, hi_x = (xmin + bw - w, xmin) if bw <= w else (xmin, xmin + bw - w)
        lo_y, hi_y = (ymin + bh - h, ymin) if bh <= h else (ymin, ymin + bh - h)
    else:
        lo_x, hi_x, lo_y, hi_y = sw - w, 0.0, sh - h, 0.0
    w_off = np.floor(rng.uniform(lo_x, hi_x, _TRIES))
    h_off = np.floor(rng.uniform(lo_y, hi_y, _TRIES))
    rects = np.stack([w_off, h_off, w_off + w, h_off + h], axis=-1)  # [T, 4]
    ok = _fully_inside(rects, sboxes).any(-1) | (_iou_one_to_many(rects, sboxes).max(-1) > 0.7)
    accepted = np.flatnonzero(ok)
    if not len(accepted):
        return None
    rect = rects[accepted[int(rng.integers(len(accepted)))]]
    # Slicing past the right/bottom edge truncates the crop (then it is stretched to the output);
    # past the top/left edge the reference pads. Keep both behaviours.
    rect = np.array([rect[0], rect[1], min(rect[2], sw), min(rect[3], sh)])
    window = np.round(rect / ratio).astype(np.int64)
    window[2] = max(window[2], window[0] + 1)
    window[3] = max(window[3], window[1] + 1)
    return window


def ssd_square_crop(
    boxes: np.ndarray, width: int, height: int, rng: np.random.Generator
) -> np.ndarray | None:
    """SSD-style square crop (reference `generate_batch_samples` + `crop_image`), source pixels.

    Five samplers (scale 1, then four at U(0.3, 1) of the short side) make up to 50 tries each
    and keep their first crop that fully covers at least one face; one of the found crops is
    picked uniformly.

    Returns:
      int64 [4] `x0 y0 x1 y1` inside the image, or None when no sampler found a crop.
    """
    short = float(min(width, height))
    found = []
    for lo in (1.0, 0.3, 0.3, 0.3, 0.3):
        scale = rng.uniform(lo, 1.0, _TRIES)
        side = scale * short
        x0 = rng.uniform(0.0, 1.0, _TRIES) * (width - side)
        y0 = rng.uniform(0.0, 1.0, _TRIES) * (height - side)
        rects = np.stack([x0, y0, x0 + side, y0 + side], axis=-1)
        if len(boxes):
            hits = np.flatnonzero(_fully_inside(rects, boxes).any(-1))
            if len(hits):
                found.append(rects[hits[0]])
    if not found:
        return None
    rect = found[int(rng.integers(len(found)))]
    window = np.floor(rect).astype(np.int64)  # The reference truncates with int().
    window[2] = max(window[2], window[0] + 1)
    window[3] = max(window[3], window[1] + 1)
    return window


def transform_boxes(
    boxes: np.ndarray,
    window: np.ndarray,
    out_size: int,
    min_face_px: float = 6.0,
    mirror: bool = False,
) -> np.ndarray:
    """Maps source boxes into the output image of `window`.

    Keeps the boxes whose centre lies strictly inside the window, clips them to the output
    image and drops those with an area under `min_face_px`².

    Args:
      boxes: float [N, 4] `x1 y1 x2 y2` source pixels.
      window: [4] `x0 y0 x1 y1` source pixels, mapped onto `[0, out_size]²`.
      out_size: output side in pixels.
      min_face_px: minimum face side (as an area, `min_face_px`²) at output scale.
      mirror: flip the boxes left-right (x' = out_size - x).

    Returns:
      float32 [M, 4] `x1 y1 x2 y2` output pixels.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
    sx, sy = out_size / (x1 - x0), out_size / (y1 - y0)
    out = (boxes[inside] - [x0, y0, x0, y0]) * [sx, sy, sx, sy]
    out = np.clip(out, 0.0, float(out_size))
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    out = out[area >= min_face_px * min_face_px]
    if mirror:
        out = np.stack([out_size - out[:, 2], out[:, 1], out_size - out[:, 0], out[:, 3]], -1)
    return out.astype(np.float32).reshape(-1, 4)


def sample_photometric(rng: np.random.Generator, enabled: bool = True) -> np.ndarray:
    """Draws the photometric parameters (reference `distort_image`, each op p=0.5).

    Brightness and contrast factors 1 + U(±0.125), 1 + U(±0.5); saturation 1 + U(±0.5); hue
    shift U(±18) on a 0-255 hue circle (PIL HSV).
    """
    if not enabled:
        return PHOTOMETRIC_IDENTITY.copy()
    u = rng.uniform(0.0, 1.0, 9)
    order = 1.0 if u[0] > 0.5 else 0.0
    brightness = 1.0 + (u[2] * 0.25 - 0.125) if u[1] < 0.5 else 1.0
    contrast = 1.0 + (u[4] - 0.5) if u[3] < 0.5 else 1.0
    saturation = 1.0 + (u[6] - 0.5) if u[5] < 0.5 else 1.0
    hue = (u[8] * 36.0 - 18.0) if u[7] < 0.5 else 0.0
    return np.array([order, brightness, contrast, saturation, hue], np.float32)


def _scale_lut(image: np.ndarray, factor: float, offset: float = 0.0) -> np.ndarray:
    """`clip(offset + factor * (image - offset))` through a 256-entry table (one pass)."""
    lut = np.clip(np.round(offset + factor * (np.arange(256, dtype=np.float32) - offset)), 0, 255)
    return cv2.LUT(image, lut.astype(np.uint8))


def apply_photometric(image: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Applies `sample_photometric` parameters to an RGB uint8 image (PIL `ImageEnhance` maths).

    Brightness blends with black, contrast with the mean grey level, saturation with the grey
    image; hue adds to the H channel of cv2's full-range HSV (the same 0-255 circle as PIL's).
    """
    order, brightness, contrast, saturation, hue = (float(v) for v in params)
    out = np.ascontiguousarray(image)

    def do_contrast(img):
        if contrast == 1.0:
            return img
        mean = float(cv2.mean(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))[0])
        return _scale_lut(img, contrast, float(int(mean + 0.5)))

    def do_saturation(img):
        if saturation == 1.0:
            return img
        grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return cv2.addWeighted(img, saturation, grey, 1.0 - saturation, 0.0)

    def do_hue(img):
        shift = int(round(hue))
        if shift == 0:
            return img
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
        # uint8 addition wraps around the hue circle, as the reference's cast does.
        hsv[..., 0] += np.uint8(shift % 256)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)

    if brightness != 1.0:
        out = _scale_lut(out, brightness)
    ops = (do_contrast, do_saturation, do_hue) if order else (do_saturation, do_hue, do_contrast)
    for op in ops:
        out = op(out)
    return out


def sample_geometry(
    boxes: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    out_size: int = 640,
    anchor_sampling_prob: float = 0.4,
    min_face_px: float = 6.0,
    augment: bool = True,
) -> Geometry:
    """Draws the random geometry and photometric parameters of one example.

    Args:
      boxes: float [N, 4] `x1 y1 x2 y2` source pixels (N may be 0).
      width: source image width in pixels.
      height: source image height in pixels.
      rng: a generator seeded for this example only (keeps the pipeline deterministic).
      out_size: output side.
      anchor_sampling_prob: probability of data-anchor-sampling (paper: 2/5), else SSD crop.
      min_face_px: faces with an area under this squared at output scale are dropped.
      augment: False gives the whole image, linear interpolation, no mirror, no distortion.

    Returns:
      A `Geometry`.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    whole = np.array([0, 0, width, height], np.int64)
    if not augment:
        return Geometry(
            whole,
            transform_boxes(boxes, whole, out_size, 0.0),
            cv2.INTER_LINEAR,
            False,
            PHOTOMETRIC_IDENTITY.copy(),
            'whole',
        )
    photometric = sample_photometric(rng)
    use_das = rng.uniform() < anchor_sampling_prob
    interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    mirror = bool(rng.uniform() < 0.5)
    window, branch = None, 'whole'
    if len(boxes):
        if use_das:
            window, branch = data_anchor_sampling(boxes, width, height, rng, out_size), 'das'
        else:
            window, branch = ssd_square_crop(boxes, width, height, rng), 'ssd'
    out = None
    # A window must show at least one source pixel (the decoder crops to window ∩ image).
    if window is not None and (
        window[0] < width and window[1] < height and window[2] > 0 and window[3] > 0
    ):
        out = transform_boxes(boxes, window, out_size, min_face_px, mirror)
    if out is None or not len(out):
        window, branch = whole, 'whole'
        out = transform_boxes(boxes, window, out_size, min_face_px, mirror)
    return Geometry(window, out, interpolation, mirror, photometric, branch)


def render(
    crop: np.ndarray,
    window: np.ndarray,
    crop_origin: tuple[int, int],
    out_size: int,
    interpolation: int = cv2.INTER_LINEAR,
    mirror: bool = False,
    photometric: np.ndarray | None = None,
    pad_value: tuple[int, int, int] = RGB_MEAN,
) -> np.ndarray:
    """Renders the output image of `window` from the decoded part of the source inside it.

    Args:
      crop: uint8 [h, w, 3] RGB, the source pixels of `window` ∩ image.
      window: [4] `x0 y0 x1 y1` source pixels mapped onto the output.
      crop_origin: `(x, y)` source pixel of `crop[0, 0]`.
      out_size: output side.
      interpolation: cv2 interpolation of the resize.
      mirror: flip left-right.
      photometric: `sample_photometric` parameters, or None for none.
      pad_value: RGB colour of the output outside the source image.

    Returns:
      uint8 [out_size, out_size, 3] RGB.
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    sx, sy = out_size / (x1 - x0), out_size / (y1 - y0)
    cx, cy = crop_origin
    h, w = crop.shape[:2]
    # Output pixel span of the crop; the rounding moves pixels by at most half an output pixel.
    left = int(round((cx - x0) * sx))
    top = int(round((cy - y0) * sy))
    right = min(int(round((cx + w - x0) * sx)), out_size)
    bottom = min(int(round((cy + h - y0) * sy)), out_size)
    if right <= left or bottom <= top:
        return np.full((out_size, out_size, 3), pad_value, np.uint8)
    pixels = cv2.resize(
        np.ascontiguousarray(crop), (right - left, bottom - top), interpolation=interpolation
    )
    if photometric is not None:
        pixels = apply_photometric(pixels, photometric)
    if (left, top, right, bottom) == (0, 0, out_size, out_size):
        out = pixels
    else:
        out = np.full((out_size, out_size, 3), pad_value, np.uint8)
        out[top:bottom, left:right] = pixels
    if mirror:
        out = cv2.flip(out, 1)
    return out


def pad_boxes(boxes: np.ndarray, max_boxes: int) -> tuple[np.ndarray, int]:
    """Pads `boxes` [M, 4] with zero rows to [max_boxes, 4]; keeps the largest if M > max_boxes.

    Returns:
      (float32 [max_boxes, 4], number of real rows). Kept boxes stay in their input order.
    """
    global _warned
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) > max_boxes:
        with _warned_lock:
            if not _warned:
                _warned = True
                warnings.warn(
                    f'an example has {len(boxes)} faces > max_boxes={max_boxes}; '
                    'keeping the largest (warned once)',
                    stacklevel=2,
                )
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.sort(np.argsort(-area, kind='stable')[:max_boxes])
        boxes = boxes[keep]
    out = np.zeros((max_boxes, 4), np.float32)
    out[: len(boxes)] = boxes
    return out, len(boxes)
