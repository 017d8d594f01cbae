"""DeepPrivacy's 7 keypoints of each face, from one of several sources behind one interface.

A source (`build(name, **options)`, names in `names()`) takes one image (RGB uint8 HWC) and its
WIDER boxes (`x y w h`, int) and returns one `KeypointResult` per box: float32 [7, 3]
`(x, y, visible)` in image pixels (OpenCV pixel centres at integers), in
`landmarks_sidecar.KEYPOINT_NAMES` order (nose, left eye, right eye, left ear, right ear, left
shoulder, right shoulder; "left" is the person's left, the image right of a frontal face),
absent points `(0, 0, 0)`; or no points and the reason (`not_in_sidecar`, `no_face_detected`,
`no_match`, ...), which the caller records per face. Sources:

* `sidecar`: the exact keypoints of the synthetic set's `landmarks/<split>.jsonl`. The engine
  already reads the sidecar once for an anonymizer with `needs_keypoints` (`wider_copy.
  load_keypoints`, by image name and face row: per box `{'keypoints7': [7, 3], 'landmarks68':
  [68, 2]}`, None where the row's box differs, and None for the whole image when it is not in
  the sidecar) and hands it to `anonymize` as `keypoints`; this source converts that (`given`).
* `dlib68`: dlib's HOG frontal detector and 68-point shape predictor (the model file of the
  `face-recognition-models` package, offline), mapped to 7 points (`landmarks68_to_keypoints7`).
* `coco_json`: a COCO-keypoints JSON made elsewhere (Mask R-CNN, as DeepPrivacy does), matched
  to the boxes as DeepPrivacy does (`match_people`).
* `none`: no keypoints (`disabled`); DeepPrivacy then runs with empty keypoint maps.

`to_crop` turns the points into the generator's normalised crop coordinates.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from safefakes_jax.anonymizers import base, identity
from safefakes_jax.data import coco_keypoints, face_crops, landmarks_sidecar

NUM_KEYPOINTS = len(landmarks_sidecar.KEYPOINT_NAMES)
NOT_IN_SIDECAR = 'not_in_sidecar'
NO_FACE_DETECTED = 'no_face_detected'
NO_MATCH = 'no_match'
NOT_IN_JSON = 'not_in_json'
DISABLED = 'disabled'
EMPTY_BOX = 'empty_box'
OUTSIDE_IMAGE = 'outside_image'
FIT_DETECTION = 'detection'  # dlib68: the shape predictor ran on a HOG detection.
FIT_BOX = 'box'  # dlib68: no detection; it ran on the annotated box itself.
SHAPE_PREDICTOR_68 = 'shape_predictor_68_face_landmarks.dat'


@dataclasses.dataclass(frozen=True)
class KeypointResult:
    """The keypoints of one face.

    Attributes:
      points: float32 [7, 3] `(x, y, visible)` in image pixels, or None.
      reason: why `points` is None (None when there are points).
      fit: how `dlib68` found them (`detection` or `box`); None for other sources.
      landmarks68: float [68, 2] in image pixels when the source has them (`sidecar`,
        `dlib68`: what CIAGAN and Sun2018 use), else None.
    """

    points: np.ndarray | None
    reason: str | None = None
    fit: str | None = None
    landmarks68: np.ndarray | None = None


class KeypointSource(abc.ABC):
    """Base class of the keypoint sources (module docstring).

    Class attributes:
      name: the registered name.
      uses_sidecar: the source converts the engine's sidecar keypoints (`given`); an
        anonymizer using it sets `needs_keypoints` so that the engine delivers them.
    """

    name: ClassVar[str] = ''
    uses_sidecar: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """The name and options (for the anonymizer's config hash)."""
        fields = dataclasses.fields(self) if dataclasses.is_dataclass(self) else ()
        return {'name': self.name, **{f.name: getattr(self, f.name) for f in fields if f.init}}

    def locate(
        self,
        image: np.ndarray | None,
        boxes: Any,
        *,
        image_name: str | None = None,
        given: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[KeypointResult]:
        """The keypoints of each box of one image.

        Args:
          image: RGB uint8 [H, W, 3] (only `dlib68` looks at it; the others accept None).
          boxes: int [N, 4] WIDER `x y w h`.
          image_name: the WIDER name `event/name.jpg` (`coco_json` needs it).
          given: what the engine passes an anonymizer as `keypoints`: None, or one
            `{'keypoints7': ...}` mapping (or None) per box (`sidecar`).

        Returns:
          One `KeypointResult` per box, in box order.
        """
        boxes = np.asarray(boxes, np.int64)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f'boxes must be int [N, 4] x y w h, got shape {boxes.shape}')
        if given is not None and len(given) != len(boxes):
            raise ValueError(f'{len(given)} keypoint entries for {len(boxes)} boxes')
        return self._locate(image, boxes, image_name, given)

    @abc.abstractmethod
    def _locate(self, image, boxes: np.ndarray, image_name, given) -> list[KeypointResult]:
        """`locate` after its checks."""


def names() -> list[str]:
    """The source names, sorted."""
    return sorted(_SOURCES)


def build(name: str, **options: Any) -> KeypointSource:
    """The source registered as `name`, with `options` (its dataclass fields).

    Raises:
      KeyError: unknown name (the message lists the known ones).
      ValueError: unknown or bad options (the message lists the accepted ones).
    """
    if name not in _SOURCES:
        raise KeyError(f'unknown keypoint source {name!r}; known: {", ".join(names())}')
    cls = _SOURCES[name]
    try:
        return cls(**options)
    except TypeError as e:
        accepted = ', '.join(f.name for f in dataclasses.fields(cls)) or 'none'
        raise ValueError(f'keypoint source {name!r}: {e} (options: {accepted})') from None


# --------------------------------------------------------------------------- none, sidecar


@dataclasses.dataclass(frozen=True)
class NoKeypoints(KeypointSource):
    """Every face without keypoints (`disabled`)."""

    name: ClassVar[str] = 'none'

    def _locate(self, image, boxes, image_name, given) -> list[KeypointResult]:
        return [KeypointResult(None, DISABLED) for _ in boxes]


@dataclasses.dataclass(frozen=True)
class SidecarKeypoints(KeypointSource):
    """The sidecar's exact `keypoints7`, from what the engine delivers as `given` (module
    docstring); `not_in_sidecar` where the image or the face has none."""

    name: ClassVar[str] = 'sidecar'
    uses_sidecar: ClassVar[bool] = True

    def _locate(self, image, boxes, image_name, given) -> list[KeypointResult]:
        out = []
        for k in range(len(boxes)):
            entry = None if given is None else given[k]
            value = None if entry is None else entry.get('keypoints7')
            if value is None:
                out.append(KeypointResult(None, NOT_IN_SIDECAR))
            else:
                where = f'{image_name or "image"} face {k}'
                lm = entry.get('landmarks68')
                out.append(
                    KeypointResult(
                        landmarks_sidecar.check_keypoints7(value, where),
                        landmarks68=(
                            None if lm is None else landmarks_sidecar.check_landmarks68(lm, where)
                        ),
                    )
                )
        return out


# --------------------------------------------------------------------------- dlib68


def landmarks68_to_keypoints7(
    landmarks68: Any, height: int | None = None, width: int | None = None
) -> np.ndarray:
    """DeepPrivacy's 7 keypoints from dlib's 68 landmarks (the project's mapping, unverified
    against the Mask R-CNN keypoints DeepPrivacy was trained with).

    nose = landmark 30 (nose tip); left eye (the person's, image right) = mean of 42-47; right
    eye = mean of 36-41; left ear = 16 and right ear = 0 (the jaw's ends, at the ears' level,
    slightly in front of the tragus); shoulders absent. With `height` and `width`, a point
    outside the image (beyond its pixels' edges) is absent, as in the sidecar.

    Args:
      landmarks68: float [68, 2] in image pixels (pixel centres at integers).
      height, width: the image size (optional).

    Returns:
      float32 [7, 3] `(x, y, v)`.
    """
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f'expected [68, 2] landmarks, got {lm.shape}')
    xy = np.stack([lm[30], lm[42:48].mean(0), lm[36:42].mean(0), lm[16], lm[0]])
    v = np.ones(len(xy), bool)
    if height is not None and width is not None:
        v &= (xy[:, 0] >= -0.5) & (xy[:, 0] < width - 0.5)
        v &= (xy[:, 1] >= -0.5) & (xy[:, 1] < height - 0.5)
    points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    points[: len(xy)] = np.where(v[:, None], np.c_[xy, np.ones(len(xy))], 0.0)
    return points


def model_file() -> str:
    """The 68-point model file of `face_recognition_models` (`identity.model_dir`, importlib)."""
    file = os.path.join(identity.model_dir(), SHAPE_PREDICTOR_68)
    if not os.path.isfile(file):
        raise FileNotFoundError(f'dlib model file {file} not found')
    return file


def _sha256(file: str) -> str:
    with open(file, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


_model_sha256 = functools.cache(lambda: _sha256(model_file()))


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib  # Here: importing this module must stay cheap.

    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(model_file())


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `x y w h` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Dlib68Keypoints(KeypointSource):
    """dlib's 68 landmarks of the face in each box, mapped to 7 (`landmarks68_to_keypoints7`).

    Per box: cut the box plus `margin` box sizes on each side (clipped to the image), rescale
    it so that the box's longer side is `detect_box_px` (upsamples a 40 px face 3x: HOG's
    window is 80 px), run the HOG frontal detector with threshold `min_score`, and take the
    detection with the largest IoU with the box (at least `min_iou`): `fit='detection'`. With
    none, the box itself is the shape predictor's rectangle when `box_fallback` (a fit all the
    same: points, reason None, `fit='box'`; the predictor then places a face-shaped layout in
    the box, also where there is no face or a profile), else the face is `no_face_detected`.
    The landmarks are mapped back to image pixels through the resize (pixel centres).

    Attributes:
      box_fallback: fit on the box when no face is detected.
      min_score: HOG detection threshold (-0.5, as the identity metric uses for originals).
      min_iou: IoU a detection needs with the box.
      detect_box_px: the box's longer side in the rescaled crop.
      margin: context around the box, in box sizes, on each side.
    """

    name: ClassVar[str] = 'dlib68'
    box_fallback: bool = True
    min_score: float = -0.5
    min_iou: float = 0.3
    detect_box_px: int = 120
    margin: float = 0.5

    def params(self) -> dict[str, Any]:
        """Name, options and the sha256 of the 68-point model file."""
        return {**super().params(), 'model_sha256': _model_sha256()}

    def _locate(self, image, boxes, image_name, given) -> list[KeypointResult]:
        if image is None:
            raise ValueError('the dlib68 keypoint source needs the image')
        image = np.ascontiguousarray(base.check_image(image))
        return [self._one(image, box) for box in boxes]

    def _one(self, image: np.ndarray, box: np.ndarray) -> KeypointResult:
        dlib, detector, predictor = _dlib_models()
        height, width = image.shape[:2]
        x, y, w, h = (int(v) for v in box)
        if w <= 0 or h <= 0:
            return KeypointResult(None, EMPTY_BOX)
        x0, y0 = max(0, int(x - self.margin * w)), max(0, int(y - self.margin * h))
        x1 = min(width, math.ceil(x + w + self.margin * w))
        y1 = min(height, math.ceil(y + h + self.margin * h))
        if x1 <= x0 or y1 <= y0:
            return KeypointResult(None, OUTSIDE_IMAGE)
        scale = self.detect_box_px / max(w, h)
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        crop = np.ascontiguousarray(cv2.resize(image[y0:y1, x0:x1], size, interpolation=interp))
        sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
        bx, by, bw, bh = in_crop = (x - x0) * sx, (y - y0) * sy, w * sx, h * sy
        rects, scores, _ = detector.run(crop, 0, float(self.min_score))
        best, best_key = None, (self.min_iou, -math.inf)
        for r, score in zip(rects, scores, strict=True):
            key = (_iou(in_crop, (r.left(), r.top(), r.width(), r.height())), score)
            if key >= best_key:
                best, best_key = r, key
        fit = FIT_DETECTION
        if best is None:
            if not self.box_fallback:
                return KeypointResult(None, NO_FACE_DETECTED)
            left, top = round(bx), round(by)
            right, bottom = max(left, round(bx + bw) - 1), max(top, round(by + bh) - 1)
            best = dlib.rectangle(left, top, right, bottom)  # dlib corners are inclusive.
            fit = FIT_BOX
        shape = predictor(crop, best)
        lm = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        lm = (lm + 0.5) / (sx, sy) - 0.5 + (x0, y0)
        return KeypointResult(
            landmarks68_to_keypoints7(lm, height, width), None, fit, lm.astype(np.float32)
        )


# --------------------------------------------------------------------------- coco_json


def match_people(boxes: np.ndarray, people: Sequence[np.ndarray]) -> list[int | None]:
    """DeepPrivacy's box-person matching: each box, in order, takes the first unmatched person
    whose nose and both eyes are present and inside it (edges included, `[x, x + w]`).

    Args:
      boxes: int [N, 4] WIDER `x y w h`.
      people: [7, 3] keypoints per person.

    Returns:
      Per box the index of its person, or None.
    """
    f = [p[:3] for p in people]  # Nose, left eye, right eye.
    out: list[int | None] = []
    for x, y, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
        inside = [
            k
            for k in range(len(people))
            if k not in out
            and np.all(f[k][:, 2] > 0)
            and np.all((f[k][:, :2] >= (x, y)) & (f[k][:, :2] <= (x + w, y + h)))
        ]
        out.append(inside[0] if inside else None)
    return out


@dataclasses.dataclass(frozen=True)
class CocoJsonKeypoints(KeypointSource):
    """External keypoints from a COCO-keypoints JSON (`data.coco_keypoints.read`, read and checked
    when built), matched with `match_people`; `no_match` for a box without a person,
    `not_in_json` for an image the file does not list.

    Attributes:
      path: the JSON file.
    """

    name: ClassVar[str] = 'coco_json'
    path: str = ''
    _people: dict = dataclasses.field(init=False, repr=False, compare=False)
    _sha256: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.path:
            raise ValueError('keypoint source coco_json needs a "path"')
        object.__setattr__(self, '_people', coco_keypoints.read(self.path))
        object.__setattr__(self, '_sha256', _sha256(self.path))

    def params(self) -> dict[str, Any]:
        """Name and the file's sha256 (its bytes make the output, not its path)."""
        return {'name': self.name, 'sha256': self._sha256}

    def _locate(self, image, boxes, image_name, given) -> list[KeypointResult]:
        if image_name is None:
            raise ValueError('the coco_json keypoint source needs the image name')
        people = self._people.get(image_name)
        if people is None:
            return [KeypointResult(None, NOT_IN_JSON) for _ in boxes]
        return [
            KeypointResult(None, NO_MATCH) if k is None else KeypointResult(people[k].copy())
            for k in match_people(boxes, people)
        ]


_SOURCES: dict[str, type[KeypointSource]] = {
    c.name: c for c in (NoKeypoints, SidecarKeypoints, Dlib68Keypoints, CocoJsonKeypoints)
}


# --------------------------------------------------------------------------- crop coordinates


def crop_pixels_to_unit(points: Any, size: int) -> np.ndarray:
    """Crop-pixel `(x, y, v)` [..., 7, 3] (pixel centres at integers) to DeepPrivacy's
    normalised [..., 7, 2]: `(column + 0.5) / size`, `(row + 0.5) / size`; absent -> NaN.

    The + 0.5 makes the value the fraction of the crop left of (above) the point, as in
    DeepPrivacy, whose Mask R-CNN keypoints are continuous coordinates with pixel i spanning
    [i, i + 1): `floor(value * r)` is then the cell that holds the point at every resolution r
    (at r = size, the pixel itself), and the crop's edges are 0 and 1.
    """
    p = np.asarray(points, np.float64)
    if p.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f'expected [..., 7, 3] keypoints, got {p.shape}')
    return np.where(p[..., 2:] > 0, (p[..., :2] + 0.5) / size, np.nan).astype(np.float32)


def to_crop(points: Any, crop_xyxy: Sequence[float], size: int) -> np.ndarray:
    """Image-pixel keypoints [7, 3] to the generator's normalised crop coordinates [7, 2].

    Args:
      points: float [7, 3] `(x, y, v)` in image pixels, or None (all absent).
      crop_xyxy: the square cut from the image, `x1 y1 x2 y2` (`face_crops.crop_box`).
      size: the crop's side after resizing (the normalised values do not depend on it).

    Returns:
      float32 [7, 2] (`crop_pixels_to_unit` of `face_crops.points_to_crop`); NaN where absent.
    """
    if points is None:
        return np.full((NUM_KEYPOINTS, 2), np.nan, np.float32)
    c = np.asarray(crop_xyxy, np.float64)
    if c.shape != (4,) or not c[2] - c[0] == c[3] - c[1] > 0:
        raise ValueError(f'crop must be a square x1 y1 x2 y2, got {crop_xyxy}')
    p = np.asarray(points, np.float64)
    if p.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f'expected [7, 3] keypoints, got {p.shape}')
    xy = face_crops.points_to_crop(p[:, :2], c, size)
    return crop_pixels_to_unit(np.c_[xy, p[:, 2]], size)
