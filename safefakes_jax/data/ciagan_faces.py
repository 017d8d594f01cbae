"""CIAGAN's preprocessing of one face: crop, landmark image, mask, the loader's view, and back.

Follows dvl-tum/ciagan `source/process_data.py` (crop, landmark and mask images) and
`source/util_data.py` `ImageDataset.load_img` (the loader), as functions of one RGB image and
its dlib 68 landmarks (float [68, 2], image pixels, OpenCV pixel centres at integers):

1. **Crop** (`crop_geometry`, `cut_face`): centre `c = int((p39 + p42) / 2)` (x and y, the
   inner eye corners), `h_r = int((x42 - x39) * 5)`, `w_r = int(h_r / 218 * 178)`; rows
   `c_y - h_r .. c_y + h_r` and columns `c_x - w_r .. c_x + w_r` of the edge-padded image, cubic
   resized to 178 wide x 218 tall. Landmarks in the crop are `(p - (x0, y0)) * (178 / W,
   218 / H)` as the original computes them (no pixel-centre correction, so they sit up to half
   a crop pixel off the face; kept: it is what the network was trained on).
2. **Landmark image** (`draw_landmarks`): white 178 x 218, 1-px `cv2.line`s (8-connected, end
   points truncated with `int()`) in RGB (0, 0, 255): the jaw 0-16 as a polyline, the nose
   bridge 27-30 and the inner mouth 60-67, closed 67 -> 60. That is **29 distinct points**; the
   CIAGAN paper and Safe Fakes say 27. The original draws (0, 0, 255) into a numpy array and
   saves it with PIL, so its lines are BLUE in RGB, as they are here.
3. **Mask** (`draw_mask_image`): the filled polygon (x0, y19), jaw 0..16, (x16, y24)
   (subscripts = landmark indices), `astype(int)`, black on white. It closes at eyebrow
   height; it is not a hull. The loader's mask is `(1 - img / 255) > 0.2` after its resizes.
4. **Loader view** (`to_square`, `centre_window`, `train_window`, `view`): each of the three
   images is Lanczos resized to a square of side `S = int(R * 1.125)` (144 for R = 128; this
   distorts the aspect ratio, as the original), then test / inference take the centre R x R
   (the original then resizes R to R, a no-op), training a random window shared by the face,
   landmark and mask images of one sample: `min_sz = S / 2`, `max_sz = (S - S / 2) * 1.5`,
   each edge moved out by `(max_sz - min_sz) / 2 * rnd` with its own `rnd ~ U[0, 1)`, i.e. a
   side of 72 .. 108 px of 144 (107 at most after `int()`), Lanczos resized to R. That window
   is zoomed in compared with the test window (128 of 144): the original's train / test
   mismatch, kept.
5. **Back** (`crop_to_image`): the chain of resizes is an axis-aligned scale + offset; the
   2 x 3 matrix maps the network crop's pixel centres to image pixel centres, so the
   anonymizer can warp the generator output back (`cv2.warpAffine`).

Deviations: OpenCV's INTER_LANCZOS4 (a fixed 8-tap kernel) instead of PIL's LANCZOS (whose
support widens when shrinking, i.e. antialiased): the shrinks here are mild (178 x 218 ->
144 x 144) and cv2 is several times faster and keeps the whole pipeline in one library; the
original stored the crop, landmark and mask images as JPEG (the two drawn ones at PIL's quality
75) and re-read them, we keep them exact; the edge padding is unbounded (the original pads by
the crop width and would fail for a centre far outside the image).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

CROP_W, CROP_H = 178, 218  # The original's res_w, res_h (CelebA's aligned size).
LOADER_SCALE = 1.125
MAX_CROP_FACTOR = 12  # 10 eye-corner distances: a face as wide as the image fits, with room.
LINE_RGB = (0, 0, 255)  # Blue in RGB (module docstring).
JAW, NOSE_BRIDGE, INNER_MOUTH = range(0, 17), range(27, 31), range(60, 68)
# The 29 distinct landmarks the landmark image draws.
DRAWN_POINTS = tuple(JAW) + tuple(NOSE_BRIDGE) + tuple(INNER_MOUTH)


@dataclasses.dataclass(frozen=True)
class CropGeometry:
    """The face crop in image pixels: columns `x0 .. x0 + width`, rows `y0 .. y0 + height`.

    Attributes:
      cx, cy: the centre (int midpoint of landmarks 39 and 42).
      half_w, half_h: `w_r` and `h_r` of the original.
    """

    cx: int
    cy: int
    half_w: int
    half_h: int

    @property
    def x0(self) -> int:
        return self.cx - self.half_w

    @property
    def y0(self) -> int:
        return self.cy - self.half_h

    @property
    def width(self) -> int:
        return 2 * self.half_w

    @property
    def height(self) -> int:
        return 2 * self.half_h


def crop_geometry(landmarks68: np.ndarray) -> CropGeometry:
    """The original's crop of a face (module docstring, 1).

    Raises:
      ValueError: not [68, 2] finite landmarks, or degenerate geometry (x42 <= x39, or a crop
        under 2 px).
    """
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
        raise ValueError(f'expected finite [68, 2] landmarks, got {lm.shape}')
    (x39, y39), (x42, y42) = lm[39], lm[42]
    if not x42 > x39:
        raise ValueError(f'degenerate face: x42 = {x42:.1f} <= x39 = {x39:.1f}')
    half_h = int((x42 - x39) * 5)
    half_w = int(half_h / CROP_H * CROP_W)
    if half_w < 1:
        raise ValueError(f'degenerate face: a crop of {2 * half_w} px')
    return CropGeometry(int((x42 + x39) / 2), int((y42 + y39) / 2), half_w, half_h)


def cut_face(image: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """The crop of the edge-padded image, cubic resized to uint8 [218, 178, 3].

    Raises:
      ValueError: a crop over `MAX_CROP_FACTOR` times the image's longer side (landmarks no
        face of the image can have; the padded crop would not fit in memory).
    """
    g = geometry
    h, w = image.shape[:2]
    if g.height > MAX_CROP_FACTOR * max(h, w, 1):
        raise ValueError(f'degenerate face: a {g.height} px crop of a {w} x {h} image')
    x0, y0, x1, y1 = max(g.x0, 0), max(g.y0, 0), min(g.x0 + g.width, w), min(g.y0 + g.height, h)
    if x1 > x0 and y1 > y0:  # Slice + replicate border: 10x faster than index clamping.
        patch = cv2.copyMakeBorder(
            np.ascontiguousarray(image[y0:y1, x0:x1]),
            y0 - g.y0,
            g.y0 + g.height - y1,
            x0 - g.x0,
            g.x0 + g.width - x1,
            cv2.BORDER_REPLICATE,
        )
    else:  # The crop lies wholly outside the image: clamp the indices (= edge padding).
        rows = np.clip(np.arange(g.y0, g.y0 + g.height), 0, h - 1)
        cols = np.clip(np.arange(g.x0, g.x0 + g.width), 0, w - 1)
        patch = image[rows[:, None], cols[None, :]]
    return cv2.resize(patch, (CROP_W, CROP_H), interpolation=cv2.INTER_CUBIC)


def crop_landmarks(landmarks68: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Image landmarks -> the 178 x 218 crop's frame, as the original (float32 [68, 2])."""
    g = geometry
    scale = np.array([CROP_W / g.width, CROP_H / g.height])
    return ((np.asarray(landmarks68, np.float64) - (g.x0, g.y0)) * scale).astype(np.float32)


def _segments() -> list[tuple[int, int]]:
    jaw = [(i, i + 1) for i in range(16)]
    nose = [(i, i + 1) for i in range(27, 30)]
    mouth = [(i, i + 1) for i in range(60, 67)] + [(67, 60)]
    return jaw + nose + mouth


SEGMENTS = tuple(_segments())  # The original's 28 `draw_line` calls.


def draw_landmarks(crop_landmarks68: np.ndarray, channels: int = 3) -> np.ndarray:
    """The landmark image, uint8 [218, 178, 3] (module docstring, 2).

    The segments are drawn as three polylines (one call each for jaw and nose, the mouth
    closed), which sets exactly the pixels of the original's 28 single `cv2.line` calls
    (the same 8-connected segments; tested). With `channels=1`, the red (= green) channel
    only, [218, 178]: blue is 255 everywhere, so the pair loader resizes one channel and
    stacks `[L, L, 255]` (the same result, a third of the work).
    """
    p = np.trunc(np.asarray(crop_landmarks68, np.float64)).astype(np.int32)  # As int().
    canvas = np.full((CROP_H, CROP_W, 3) if channels == 3 else (CROP_H, CROP_W), 255, np.uint8)
    color = LINE_RGB if channels == 3 else 0
    cv2.polylines(canvas, [p[0:17], p[27:31]], False, color, 1)
    cv2.polylines(canvas, [p[60:68]], True, color, 1)
    return canvas


def mask_polygon(landmarks68: np.ndarray) -> np.ndarray:
    """The mask's outline, float64 [19, 2]: (x0, y19), jaw 0..16, (x16, y24)."""
    lm = np.asarray(landmarks68, np.float64)
    return np.concatenate([[[lm[0, 0], lm[19, 1]]], lm[0:17], [[lm[16, 0], lm[24, 1]]]])


def draw_mask_image(crop_landmarks68: np.ndarray) -> np.ndarray:
    """The mask image, uint8 [218, 178]: 0 inside the polygon, 255 outside (as saved)."""
    canvas = np.full((CROP_H, CROP_W), 255, np.uint8)
    cv2.fillPoly(canvas, [mask_polygon(crop_landmarks68).astype(np.int32)], 0)
    return canvas


def mask_from_image(mask_image: np.ndarray) -> np.ndarray:
    """The loader's mask: `(1 - img / 255) > 0.2` (True = generate), computed in float32."""
    return (1.0 - np.asarray(mask_image, np.float32) / np.float32(255.0)) > np.float32(0.2)


def loader_side(resolution: int) -> int:
    """S = int(R * 1.125), the square every image is resized to first (144 for 128)."""
    return int(resolution * LOADER_SCALE)


def to_square(image: np.ndarray, side: int) -> np.ndarray:
    """Lanczos resize to side x side (the loader's first step; distorts the aspect)."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_LANCZOS4)


Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in the S square (PIL's crop box).


def centre_window(side: int, resolution: int) -> Window:
    """The original's test crop of the S square: the centre R x R."""
    c, half = side / 2, resolution / 2
    return int(c - half), int(c - half), int(c + half), int(c + half)


def train_window(side: int, rnd: np.ndarray) -> Window:
    """The original's training crop of the S square from 4 uniforms (left, top, right,
    bottom edge): side S / 2 .. 3 S / 4 in x and y independently (module docstring, 4)."""
    c = side / 2
    min_sz, max_sz = side / 2, (side - c) * 1.5
    diff, half = (max_sz - min_sz) / 2, min_sz / 2
    r = np.asarray(rnd, np.float64)
    return (
        int(c - half - diff * r[0]),
        int(c - half - diff * r[1]),
        int(c + half + diff * r[2]),
        int(c + half + diff * r[3]),
    )


def view(square: np.ndarray, window: Window, resolution: int) -> np.ndarray:
    """The window of an S square, Lanczos resized to R x R (no resize when it is R x R)."""
    x0, y0, x1, y1 = window
    out = square[y0:y1, x0:x1]
    if out.shape[:2] != (resolution, resolution):
        out = cv2.resize(out, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return out


def crop_to_image(geometry: CropGeometry, resolution: int) -> np.ndarray:
    """float64 [2, 3]: network-crop pixel centres (test view, R x R) -> image pixel centres.

    A pixel k of an n-pixel axis resized to m pixels samples the source at `(k + 0.5) n / m
    - 0.5` (OpenCV); composing crop -> 178 x 218 -> S x S -> window offset o gives
    `u = x0 - 0.5 + (k + o + 0.5) * W / S` (W the crop width in image pixels), same for y.
    Use it as `cv2.warpAffine(net_output, M, size)` to bring the output into the image.
    """
    side = loader_side(resolution)
    ox, oy, x1, _ = centre_window(side, resolution)
    g = geometry
    win = (x1 - ox) / resolution  # 1 whenever the window is R x R (always, for R >= 8).
    ax, ay = win * g.width / side, win * g.height / side
    bx = g.x0 - 0.5 + (ox + 0.5 * win) * g.width / side
    by = g.y0 - 0.5 + (oy + 0.5 * win) * g.height / side
    return np.array([[ax, 0.0, bx], [0.0, ay, by]])


@dataclasses.dataclass
class NetworkInputs:
    """What the generator needs for one face at resolution R (test view).

    Attributes:
      face: float32 [R, R, 3] in [0, 1].
      landmarks_image: float32 [R, R, 3] in [0, 1] (white, blue lines).
      mask: float32 [R, R, 1], 1 = the region to generate.
      geometry: the crop in the image.
      matrix: float64 [2, 3] `crop_to_image`.
    """

    face: np.ndarray
    landmarks_image: np.ndarray
    mask: np.ndarray
    geometry: CropGeometry
    matrix: np.ndarray


def network_inputs(image: np.ndarray, landmarks68: np.ndarray, resolution: int) -> NetworkInputs:
    """The original's test-time inputs of one face of `image` (RGB uint8 HWC).

    Raises:
      ValueError: degenerate landmarks (`crop_geometry`).
    """
    geometry = crop_geometry(landmarks68)
    lm = crop_landmarks(landmarks68, geometry)
    side = loader_side(resolution)
    window = centre_window(side, resolution)

    def prep(img: np.ndarray) -> np.ndarray:
        return view(to_square(img, side), window, resolution)

    face = prep(cut_face(image, geometry)).astype(np.float32) / 255.0
    lndm = prep(draw_landmarks(lm)).astype(np.float32) / 255.0
    mask = mask_from_image(prep(draw_mask_image(lm)))[..., None].astype(np.float32)
    return NetworkInputs(face, lndm, mask, geometry, crop_to_image(geometry, resolution))
