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

The model files come from the `face_recognition_models` package, found with
`importlib.util.find_spec` (never `pkg_resources`, gone in setuptools >= 82). Loading takes
~0.25 s; `load()` does it once per process. A descriptor costs ~0.08 s on one CPU core.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence

import numpy as np

MATCH_THRESHOLD = 0.6  # dlib's same-person threshold for this model.
CHIP_PADDING = 0.25  # dlib's default; the reference measurements use it.
SHAPE_PREDICTOR = 'shape_predictor_5_face_landmarks.dat'
RECOGNITION_MODEL = 'dlib_face_recognition_resnet_model_v1.dat'


def model_dir() -> str:
    """The folder of the dlib model files shipped by `face_recognition_models`.

    Raises:
      FileNotFoundError: the package is not installed, or a model file is missing.
    """
    spec = importlib.util.find_spec('face_recognition_models')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('package face_recognition_models not installed (pip install '
                                'face-recognition-models); it holds the dlib model files')
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

    def distances(self, original: np.ndarray, anonymized: np.ndarray,
                  boxes_xywh: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [len(boxes)] descriptor distances of the faces in `boxes_xywh`, both images
        aligned with the original's landmarks (so the same region is compared).

        Args:
          original: the original image, RGB uint8.
          anonymized: the anonymized image, same shape.
          boxes_xywh: the annotated boxes of the faces to compare.
        """
        if original.shape != anonymized.shape:
            raise ValueError(f'image shapes differ: {original.shape} vs {anonymized.shape}')
        shapes = [self.landmarks(original, box) for box in boxes_xywh]
        a = self.descriptors(original, shapes)
        b = self.descriptors(anonymized, shapes)
        return np.linalg.norm(a - b, axis=1).astype(np.float32)


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
