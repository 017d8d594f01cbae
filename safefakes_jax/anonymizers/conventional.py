"""The conventional anonymizers of the paper (Sec. III-C / IV-C): blur, fullblur, pixelate,
blackout.

Paper settings are the defaults: a fixed 25 x 25 kernel for face blurring, 18 x 18 for
full-image blurring, a 10 x 10 pixelation output, and every annotated box anonymized (no
minimum face size). The paper does not say which blur it used; we use a box (mean) filter, the
OpenCV `cv2.blur` that the paper's "kernel size" most plainly describes, with a Gaussian as an
option. Pixel bounds and records are those of `base` (the box `x y w h` is `[y:y+h, x:x+w]`,
clipped to the image).

Decisions the paper leaves open (ours, documented here and in the README):

* blur: every pixel of a face box becomes the mean of the 25 x 25 window of the *original*
  image centred on it, surroundings included, i.e. the box is blurred in the context of the
  image (not as an isolated patch, which would leave a 1-pixel box unchanged and smear its
  edges with reflected copies of itself). Implemented by filtering a window around the box
  padded by the kernel radius and writing back only the box pixels, which equals blurring the
  whole image and copying the box. Past the image edge the image is reflected without
  repeating the edge pixel (OpenCV's default BORDER_REFLECT_101: `gfedcb|abcdefgh|gfedcba`).
  Rounding: OpenCV rounds the mean to the nearest integer (no ties exist for odd kernels).
* fullblur: the whole image through an 18 x 18 box filter, BORDER_REFLECT_101. An even kernel
  has no centre; OpenCV's default anchor (-1, -1) is (k // 2, k // 2) = (9, 9), so output pixel
  (r, c) is the mean over rows r-9 .. r+8 and columns c-9 .. c+8; means are rounded to the
  nearest integer, ties to even. Only a box filter takes an even kernel (Gaussian: odd only).
  Each face box is recorded `anonymized` (the blur covers it).
* pixelate: the box is reduced to `min(10, h)` x `min(10, w)` cells with `cv2.INTER_AREA`
  (each cell the area-weighted mean of the pixels it covers, fractional pixels weighted by the
  covered fraction) and scaled back with nearest neighbour: pixel x of a box w wide takes cell
  `((2x + 1) * cells) // (2w)`, the cell under its centre, computed in integers (cv2's
  INTER_NEAREST maps with a rounded float scale and makes uneven blocks). A dimension narrower
  than 10 px keeps one cell per pixel, so a box at most 10 x 10 would come back unchanged. By
  default such boxes are blacked out and recorded `fallback:smaller_than_cells` (privacy fails
  closed: DESIGN.md). Deviation from the paper, whose fixed 10 x 10 output leaves them as they
  are; `small_box='keep'` reproduces that literally (recorded `skipped:smaller_than_cells`, and
  the leak audit will list those faces).
* blackout: the box set to `value` (0).

Overlapping boxes: each face is computed from the original image and written in annotation
order (see `base`), so an overlap holds the later face's result.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from safefakes_jax.anonymizers import base

_FILTERS = ('box', 'gaussian')


def _check_kernel(kernel: int, filt: str, what: str) -> None:
    if filt not in _FILTERS:
        raise ValueError(f'{what}: filter must be one of {_FILTERS}, got {filt!r}')
    if not isinstance(kernel, int | np.integer) or kernel < 1:
        raise ValueError(f'{what}: kernel must be a positive integer, got {kernel!r}')
    if filt == 'gaussian' and kernel % 2 == 0:
        raise ValueError(
            f'{what}: a Gaussian kernel must be odd, got {kernel} (use '
            "filter='box' for even kernels)"
        )


def _filter(image: np.ndarray, kernel: int, filt: str, sigma: float) -> np.ndarray:
    if filt == 'box':
        return cv2.blur(image, (kernel, kernel), borderType=cv2.BORDER_REFLECT_101)
    return cv2.GaussianBlur(image, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101)


@base.register('blur')
@dataclasses.dataclass(frozen=True)
class Blur(base.Anonymizer):
    """Blurs each face box in the context of the image (module docstring).

    Attributes:
      kernel: kernel side in pixels (paper: 25).
      filter: 'box' (mean, default) or 'gaussian' (odd kernel; `sigma` 0 = OpenCV's
        0.3 * ((kernel - 1) / 2 - 1) + 0.8).
      sigma: Gaussian sigma (ignored by the box filter).
    """

    kernel: int = 25
    filter: str = 'box'
    sigma: float = 0.0

    def __post_init__(self):
        _check_kernel(self.kernel, self.filter, 'blur')

    def anonymize_face(self, original, out, face, rng):
        del rng
        height, width = original.shape[:2]
        # The kernel reaches k // 2 pixels before (OpenCV's anchor) and k - 1 - k // 2 after;
        # padding k // 2 on both sides also holds every pixel that the reflection at an image
        # edge inside the window mirrors in, so the result equals blurring the whole image.
        pad = self.kernel // 2
        wy0, wx0 = max(face.y0 - pad, 0), max(face.x0 - pad, 0)
        wy1, wx1 = min(face.y1 + pad, height), min(face.x1 + pad, width)
        # A copy: the window must not see pixels outside it as its border (a window that
        # stops short of the image edge has all the context the kernel reaches anyway).
        window = np.ascontiguousarray(original[wy0:wy1, wx0:wx1])
        blurred = _filter(window, self.kernel, self.filter, self.sigma)
        out[face.region] = blurred[face.y0 - wy0 : face.y1 - wy0, face.x0 - wx0 : face.x1 - wx0]


@base.register('fullblur')
@dataclasses.dataclass(frozen=True)
class FullBlur(base.Anonymizer):
    """Blurs the whole image (module docstring); every face box inside it is anonymized.

    Attributes:
      kernel: kernel side in pixels (paper: 18; even is fine for the box filter).
      filter: 'box' (default) or 'gaussian' (odd kernel only).
      sigma: Gaussian sigma (0 = from the kernel).
    """

    kernel: int = 18
    filter: str = 'box'
    sigma: float = 0.0

    def __post_init__(self):
        _check_kernel(self.kernel, self.filter, 'fullblur')

    def anonymize_image(self, original, out, faces, rng):
        del faces, rng
        if self.filter == 'box':  # Straight into `out`: no temporary image.
            cv2.blur(
                original, (self.kernel, self.kernel), dst=out, borderType=cv2.BORDER_REFLECT_101
            )
        else:
            out[...] = _filter(original, self.kernel, self.filter, self.sigma)

    def anonymize_face(self, original, out, face, rng):
        del original, out, face, rng  # Done by anonymize_image.


def cell_index(size: int, cells: int) -> np.ndarray:
    """Cell of each of `size` pixels when split into `cells`: the cell under the pixel centre."""
    return (np.arange(size, dtype=np.int64) * 2 + 1) * cells // (2 * size)


@base.register('pixelate')
@dataclasses.dataclass(frozen=True)
class Pixelate(base.Anonymizer):
    """Pixelates each face box to `cells` x `cells` blocks (module docstring).

    Attributes:
      cells: output cells per dimension (paper: 10); `min(cells, size)` in a smaller dimension.
      small_box: 'blackout' (default, fails closed) or 'keep' (paper-literal) for boxes no
        larger than `cells` x `cells`, which pixelation cannot change.
    """

    cells: int = 10
    small_box: str = 'blackout'

    def __post_init__(self):
        if not isinstance(self.cells, int | np.integer) or self.cells < 1:
            raise ValueError(f'pixelate: cells must be a positive integer, got {self.cells!r}')
        if self.small_box not in ('keep', 'blackout'):
            raise ValueError(
                f"pixelate: small_box must be 'keep' or 'blackout', got {self.small_box!r}"
            )

    def anonymize_face(self, original, out, face, rng):
        del rng
        h, w = face.y1 - face.y0, face.x1 - face.x0
        ch, cw = min(self.cells, h), min(self.cells, w)
        if ch == h and cw == w:  # One cell per pixel: the identity.
            if self.small_box == 'keep':
                return 'skipped:smaller_than_cells'
            raise base.Fallback('smaller_than_cells')
        small = cv2.resize(original[face.region], (cw, ch), interpolation=cv2.INTER_AREA)
        # Cells are runs of pixels (the index is monotonic): repeat each cell over its run,
        # several times faster than fancy indexing.
        rows = np.bincount(cell_index(h, ch), minlength=ch)
        cols = np.bincount(cell_index(w, cw), minlength=cw)
        out[face.region] = np.repeat(np.repeat(small, rows, axis=0), cols, axis=1)
        return None


@base.register('blackout')
@dataclasses.dataclass(frozen=True)
class Blackout(base.Anonymizer):
    """Sets each face box to `value` (paper: black).

    Attributes:
      value: the grey level written into every channel (0..255).
    """

    value: int = 0
    check_unchanged = False  # A constant box is anonymized whatever was there.

    def __post_init__(self):
        if not isinstance(self.value, int | np.integer) or not 0 <= self.value <= 255:
            raise ValueError(f'blackout: value must be an integer in 0..255, got {self.value!r}')

    def anonymize_face(self, original, out, face, rng):
        del rng
        del original
        out[face.region] = self.value
