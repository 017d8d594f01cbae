"""Pixel measures of the leak audit: how much a face changed, and whether it is a near copy.

Two measures compare the luma (BT.601) of the anonymized box with the original's:

* `pixel_change`: the share of pixels whose luma moved by more than `tol` (see `audit`'s
  docstring for why luma and why 4) and the mean absolute RGB change. A face left unchanged
  scores ~0; it is blind to a copy that moves every pixel a little.
* `near_copy_score`: structural similarity that survives brightness, contrast and noise.
  scikit-image's `structural_similarity` map (7 x 7 windows, data range 255) is computed on both
  boxes rescaled to a 64 px short side (`NEAR_COPY_SIZE`, so that a 12 px and a 300 px face are
  judged at the same relative scale) and smoothed with a Gaussian of sigma 1 px
  (`NEAR_COPY_SMOOTH`: per-pixel noise moves every pixel but none of the face's structure; without
  it 8% of the +-6 noise copies score below 0.95, with it 2%); each pixel's SSIM is weighted by
  the original's local variance (flat skin says nothing about identity: a blur leaves it as it
  was, SSIM ~1), and the score is the maximum of the weighted mean over sub-windows of half the
  box's width and height whose structure (mean local variance) is at least a tenth of the
  box's. The maximum over sub-windows is what catches a face whose outer ring was blacked out
  but whose centre (eyes, nose, mouth) was kept: a global SSIM over the box is pulled to ~0 by
  the black ring, the centre alone is ~1. The structure floor keeps featureless corners
  (forehead, cheek) out.

Calibration: the first 300 train images of the demo's synthetic set (1,630 faces >= 10 px; the
methods' copies from `launch/anonymize.py --config=configs/anonymize/<method>.py:smoke`, the
near copies from `audit_variants`, all JPEG q95). Share of faces scoring >=
`NEAR_COPY_THRESHOLD` = 0.95, by face width 10-20 / 20-40 / 40-100 / >= 100 px (588 / 458 /
412 / 172 faces):

  unaltered re-encode, brightness +6:   1.000 / 1.000 / 1.000 / 1.000
  noise +-6:                            0.980 / 0.980 / 0.998 / 1.000
  outer ring blacked, central 70% kept: 0.905 / 0.989 / 0.981 / 0.988
  blur 25 x 25:                         0.009 / 0.017 / 0.046 / 0.233
  fullblur 18 x 18:                     0.010 / 0.017 / 0.053 / 0.395
  pixelate, 10 x 10 cells:              0.318 / 0.059 / 0.063 / 0.041
  blackout:                             0 / 0 / 0 / 0

What the methods leave above 0.95 are faces they leave nearly intact: pixelation of a face
10-20 px wide into 10 x 10 cells of 1-2 px, and a 25 x 25 or 18 x 18 box blur of a face several
hundred px wide (many of those still match the original's identity). Global SSIM over the box
would put the ring variant at 0.1-0.4.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from safefakes_jax.data import images

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, RGB order.
DEFAULT_TOL = 4.0
NEAR_COPY_THRESHOLD = 0.95
NEAR_COPY_SIZE = 64  # Short side of both boxes when they are compared.
NEAR_COPY_MAX_SIDE = 256  # Long side cap (very elongated boxes).
NEAR_COPY_SMOOTH = 1.0  # Gaussian sigma (px at the compared size) against pixel noise.
NEAR_COPY_WINDOW = 0.5  # Sub-window side, as a fraction of the box's.
NEAR_COPY_MIN_STRUCTURE = 0.1  # Sub-window mean local variance / the box's.
SSIM_WIN = 7  # skimage's default window.


def clip_box(box_xywh: Sequence[int], height: int, width: int) -> tuple[slice, slice] | None:
    """The numpy index `image[rows, cols]` of a WIDER box clipped to the image; None if empty."""
    x, y, w, h = (int(v) for v in box_xywh)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def luma(rgb: np.ndarray) -> np.ndarray:
    """float32 BT.601 luma (0..255) of RGB uint8 pixels [..., 3]."""
    return rgb.astype(np.float32) @ LUMA_WEIGHTS


def pixel_change(
    original: np.ndarray, anonymized: np.ndarray, box_xywh: Sequence[int], tol: float = DEFAULT_TOL
) -> tuple[float, float] | None:
    """How much the face in `box_xywh` changed.

    Args:
      original: RGB uint8 [H, W, 3].
      anonymized: RGB uint8, same shape.
      box_xywh: WIDER `x y w h`.
      tol: luma tolerance (`audit` module docstring).

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
    delta = np.abs(diff @ LUMA_WEIGHTS)
    return float(np.mean(delta > tol)), float(np.mean(np.abs(diff)))


def _rescale(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    scale = min(NEAR_COPY_SIZE / min(h, w), NEAR_COPY_MAX_SIDE / max(h, w))
    size = (max(SSIM_WIN, round(w * scale)), max(SSIM_WIN, round(h * scale)))
    resized = cv2.resize(
        plane, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    return cv2.GaussianBlur(resized, (0, 0), NEAR_COPY_SMOOTH)


def _window_sums(integral: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Sums over every kh x kw window, from a `cv2.integral` table."""
    return integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw] + integral[:-kh, :-kw]


def near_copy_score(
    original: np.ndarray, anonymized: np.ndarray, box_xywh: Sequence[int]
) -> float | None:
    """Structure-weighted SSIM of the box's luma, best sub-window (module docstring).

    Args:
      original: RGB uint8 [H, W, 3].
      anonymized: RGB uint8, same shape.
      box_xywh: WIDER `x y w h`.

    Returns:
      The score (1 = identical structure; a blacked-out or pixelated face scores ~0-0.5), or
      None when the box is empty after clipping.
    """
    if original.shape != anonymized.shape:
        raise ValueError(f'image shapes differ: {original.shape} vs {anonymized.shape}')
    region = clip_box(box_xywh, *original.shape[:2])
    if region is None:
        return None
    a, b = _rescale(luma(original[region])), _rescale(luma(anonymized[region]))
    ssim = structural_similarity(a, b, data_range=255.0, win_size=SSIM_WIN, full=True)[1]
    mean = cv2.blur(a, (SSIM_WIN, SSIM_WIN))
    var = np.maximum(cv2.blur(a * a, (SSIM_WIN, SSIM_WIN)) - mean * mean, 0.0) + 1e-3
    h, w = a.shape
    kh, kw = max(1, round(NEAR_COPY_WINDOW * h)), max(1, round(NEAR_COPY_WINDOW * w))
    weighted = _window_sums(cv2.integral((ssim * var).astype(np.float64)), kh, kw)
    structure = _window_sums(cv2.integral(var.astype(np.float64)), kh, kw)
    # The densest window always passes (its density is at least the mean).
    ok = structure >= NEAR_COPY_MIN_STRUCTURE * float(var.mean()) * kh * kw
    return float(np.max(weighted[ok] / structure[ok]))


def read_rgb(path: str) -> np.ndarray | None:
    """An image file as RGB uint8 through the project's codec (`data.images`: EXIF orientation
    ignored, as the engine and tf.data decode it); None if it is missing or does not decode."""
    try:
        return images.read(path)
    except images.ImageDecodeError:
        return None
