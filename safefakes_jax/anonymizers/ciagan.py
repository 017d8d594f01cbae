"""`ciagan`: the face inside CIAGAN's landmark mask replaced by its generator, pasted back.

Follows dvl-tum/ciagan `source/test.py` on the original's preprocessing
(`data.ciagan_faces`; reference §2, §4 decisions 7, 8, 11, 13, 14), per face of at least
`min_face_px` = 10 px (narrower ones stay as they are, `skipped:below_min_face_px`):

1. The 68 landmarks of the face from the keypoint source (`KeypointResult.landmarks68`:
   'sidecar', the synthetic set's exact ones, or 'dlib68'). None: the face is blacked out,
   `fallback:no_keypoints` (Safe Fakes' rule); degenerate geometry (`crop_geometry`):
   blacked out, `fallback:bad_landmarks`.
2. The landmark crop (178 x 218) -> the 144 square -> its centre 128 (for R = 128), the
   landmark image and the mask (`ciagan_faces.network_inputs`).
3. The generator on (landmark image, face * (1 - mask), one-hot of the target identity), in
   fixed batches of `face_batch` faces (the last padded), compiled once (device-bound). The
   target identity is drawn per face, in face order, from the image's rng among
   `num_classes` (`identity='random'`, Safe Fakes), or `(source + 1) % num_classes` with
   `identity='next'` (the original's test.py; needs a per-face `identity` in the keypoints the
   engine passes, and refuses without).
4. Composite `clip(y * mask + face * (1 - mask), 0, 1)` in the R x R crop, then back to the
   image through the inverse of the resizes (`ciagan_faces.crop_to_image`: bilinear, after an
   area shrink of the crop when the face is smaller than R), and ONLY the pixels of the mask
   region are written: the mask polygon (x0, y19), jaw 0..16, (x16, y24) rasterised in image
   coordinates, restricted to the image pixels the network crop covers. Every other pixel
   keeps its value (the face box above the eyebrows, the ears, the hair: CIAGAN keeps them by
   design). Mask pixels outside the network crop (the jaw of a face seen from the side, whose
   inner eye corners, and so the crop, are close together) must not keep the original face:
   they are blacked out (fail closed) and the face is recorded `anonymized:mask_outside_crop`.

Deviations from the original, whose test.py works on pre-cropped CelebA faces and neither
detects nor pastes back (issues #13, #14): the paste-back itself; every box of at least 10 px is
handled, faces that fail are blacked out and recorded; the identity is random by default.

Weights (`params`): a folder of `torch_import.save_converted` whose `conversion.json` has
`format` 'ciagan', `num_classes`, `resolution` and `width` (a converted original checkpoint,
`tools/convert_torch_weights.py --format=ciagan`, or a training export `<workdir>/generator`);
`load_converted` gives the variables `{'params', 'batch_stats'}` (the spectral-norm state).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from safefakes_jax.anonymizers import base, gan_base, generator_folder
from safefakes_jax.anonymizers import keypoints as keypoints_lib
from safefakes_jax.data import ciagan_faces

FORMATS = ('ciagan',)
KEYPOINT_SOURCES = ('sidecar', 'dlib68')  # The sources that give 68 landmarks.
MASK_OUTSIDE_CROP = 'anonymized:mask_outside_crop'
TRAIN_HINT = (
    'train one with: python launch/train.py --config=configs/ciagan_celeba.py:smoke '
    '--workdir=workdirs/ciagan_celeba_smoke (it exports <workdir>/generator), or convert the '
    'original weights with: python tools/convert_torch_weights.py --format=ciagan '
    '--src=FILE.pth --out=DIR'
)


GeneratorNotFoundError = generator_folder.GeneratorNotFoundError


@functools.lru_cache(maxsize=4)
def load_generator(path: str) -> tuple[Any, Any, str, dict]:
    """(Generator module, variables, sha256, conversion info) of a generator folder.

    Raises:
      GeneratorNotFoundError: no such folder or no checkpoint in it.
      ValueError: a checkpoint of another model.
    """
    from safefakes_jax.models import ciagan

    info, variables, sha = generator_folder.read(path, FORMATS, 'CIAGAN', TRAIN_HINT)
    model = ciagan.Generator(
        num_classes=int(info['num_classes']),
        resolution=int(info.get('resolution', 128)),
        width=float(info.get('width', 1.0)),
    )
    return model, variables, sha, info


@functools.lru_cache(maxsize=4)
def _compiled(path: str):
    """`load_generator` plus its jitted apply, shared by the instances of one folder (one
    compile per face batch size, not per instance)."""
    import jax

    model, variables, sha, info = load_generator(path)
    apply = jax.jit(lambda v, lndm, masked, onehot: model.apply(v, lndm, masked, onehot))
    return model, variables, sha, info, apply


def _polygon_region(landmarks68: np.ndarray, height: int, width: int):
    """(y0, x0, bool mask) of the mask polygon rasterised in image pixels, or None if empty."""
    poly = ciagan_faces.mask_polygon(landmarks68)
    x0, y0 = max(math.floor(poly[:, 0].min()), 0), max(math.floor(poly[:, 1].min()), 0)
    x1 = min(math.ceil(poly[:, 0].max()) + 1, width)
    y1 = min(math.ceil(poly[:, 1].max()) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    points = np.round((poly - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits.
    cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=4)
    inside = canvas.astype(bool)
    return (y0, x0, inside) if inside.any() else None


def warp_to_image(crop: np.ndarray, matrix: np.ndarray, y0: int, x0: int, shape) -> np.ndarray:
    """The R x R `crop` (float32 [R, R, 3]) in image pixels `[y0:, x0:]` of `shape` (h, w).

    `matrix` maps crop pixel centres to image ones (`crop_to_image`). A crop larger than the
    face in the image is first shrunk with INTER_AREA (a bilinear warp alone would alias).
    """
    r = crop.shape[0]
    m = np.array(matrix, np.float64)
    tw, th = max(1, round(r * m[0, 0])), max(1, round(r * m[1, 1]))
    if tw < r or th < r:
        crop = cv2.resize(crop, (min(tw, r), min(th, r)), interpolation=cv2.INTER_AREA)
        for axis, n in ((0, crop.shape[1]), (1, crop.shape[0])):
            s = r / n  # Small pixel k <-> crop coordinate (k + 0.5) * s - 0.5.
            m[axis, 2] += m[axis, axis] * (0.5 * s - 0.5)
            m[axis, axis] *= s
    m[:, 2] -= (x0, y0)
    return cv2.warpAffine(
        crop, m, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def covered(matrix: np.ndarray, resolution: int, y0: int, x0: int, shape) -> np.ndarray:
    """bool [h, w]: the pixels of `[y0:, x0:]` whose centre maps inside the crop's pixel
    area [-0.5, R - 0.5] (the outer half pixel is the crop's edge pixels, replicated)."""
    (ax, _, bx), (_, ay, by) = np.asarray(matrix, np.float64)
    kx = (np.arange(x0, x0 + shape[1]) - bx) / ax
    ky = (np.arange(y0, y0 + shape[0]) - by) / ay
    eps = 1e-6
    ok_x = (kx >= -0.5 - eps) & (kx <= resolution - 0.5 + eps)
    ok_y = (ky >= -0.5 - eps) & (ky <= resolution - 0.5 + eps)
    return ok_y[:, None] & ok_x[None, :]


@base.register('ciagan')
@dataclasses.dataclass
class Ciagan(gan_base.GanAnonymizer):
    """The CIAGAN anonymizer (module docstring).

    Attributes:
      weights: the generator folder (a conversion or `<workdir>/generator`); the config key
        is `anonymizer.params` (`config_aliases`).
      keypoints: the landmark source: 'sidecar' (the synthetic set's exact 68 landmarks,
        passed by the engine) or 'dlib68'.
      identity: 'random' (per face from the image's rng) or 'next' ((source + 1) % classes,
        source = the face's `identity` entry in its keypoints as it stands: the synthetic
        sidecar's identity number, which is the train class where the train classes are
        0..K-1; a call without it raises ValueError, which the engine turns into a blacked-out
        image).
      face_batch: faces per generator call (the compiled batch size).
      batch_size: images per engine call.
    """

    weights: str = ''
    keypoints: str = 'sidecar'
    identity: str = 'random'
    face_batch: int = 32
    batch_size: int = 8

    def __post_init__(self):
        if self.identity not in ('random', 'next'):
            raise ValueError(f"identity must be 'random' or 'next', got {self.identity!r}")
        if self.face_batch < 1 or self.batch_size < 1:
            raise ValueError('face_batch and batch_size must be >= 1')
        if self.keypoints not in KEYPOINT_SOURCES:
            raise ValueError(
                f'CIAGAN needs 68 landmarks: keypoints must be one of {KEYPOINT_SOURCES}, '
                f'got {self.keypoints!r}'
            )
        self._source = keypoints_lib.build(self.keypoints)
        self.needs_keypoints = self._source.uses_sidecar  # The engine reads the sidecar then.
        self._model = None

    def _load(self):
        if self._model is None:
            self._model = _compiled(self.weights and os.path.abspath(self.weights))
        return self._model

    def params(self) -> dict[str, Any]:
        model, _, sha, info, _ = self._load()
        return self.generator_params(model, sha, info) | {
            'num_classes': model.num_classes,
            'width': model.width,
        }

    def _targets(self, item: base.Item, faces: Sequence[base.Face], num_classes: int):
        """The target class of each face (module docstring, 3)."""
        if self.identity == 'random':
            if item.rng is None:
                raise ValueError("identity='random' needs the image's rng (base.Item.rng)")
            return [int(item.rng.integers(num_classes)) for _ in faces]
        out = []
        for face in faces:
            source = None if face.keypoints is None else face.keypoints.get('identity')
            if source is None:
                raise ValueError(
                    f"identity='next' needs each face's source identity in its keypoints "
                    f'(`identity`); face {face.index} of {item.name or "the image"} has none'
                )
            out.append((int(np.asarray(source).item()) + 1) % num_classes)
        return out

    def anonymize_batch(self, items: Sequence[base.Item]) -> list[base.Result]:
        results, selected = self.select_items(items)
        if not any(faces for _, _, faces in selected):
            return results  # Nothing to generate: the model is not needed.
        model, variables, _, _, apply = self._load()
        r, classes = model.resolution, model.num_classes
        jobs = []  # (item index, face, landmarks68, NetworkInputs, target class)
        for n, (original, boxes, faces) in enumerate(selected):
            if not faces:
                continue
            targets = self._targets(items[n], faces, classes)  # Before any face can fail.
            found = self._source.locate(
                original, boxes, image_name=items[n].name, given=items[n].keypoints
            )
            for face, target in zip(faces, targets, strict=True):
                record = None
                lm = found[face.index].landmarks68
                if lm is None:
                    record = 'fallback:no_keypoints'
                else:
                    try:
                        inputs = ciagan_faces.network_inputs(original, lm, r)
                        jobs.append((n, face, np.asarray(lm, np.float64), inputs, target))
                    except ValueError:
                        record = 'fallback:bad_landmarks'
                    except Exception as e:  # noqa: BLE001 (fail closed)
                        record = f'fallback:error:{type(e).__name__}'
                if record is not None:
                    base.blackout(results[n].image, face)
                    results[n].records[face.index] = record
        for start in range(0, len(jobs), self.face_batch):
            chunk = jobs[start : start + self.face_batch]
            pad = self.face_batch - len(chunk)
            lndm = np.stack([j[3].landmarks_image for j in chunk] + [np.ones((r, r, 3))] * pad)
            face = np.stack([j[3].face for j in chunk] + [np.zeros((r, r, 3))] * pad)
            mask = np.stack([j[3].mask for j in chunk] + [np.zeros((r, r, 1))] * pad)
            onehot = np.zeros((self.face_batch, classes), np.float32)
            onehot[np.arange(len(chunk)), [j[4] for j in chunk]] = 1.0
            masked = (face * (1.0 - mask)).astype(np.float32)
            try:
                y = np.asarray(apply(variables, lndm.astype(np.float32), masked, onehot))
                composite = np.clip(y * mask + face * (1.0 - mask), 0.0, 1.0).astype(np.float32)
            except Exception as e:  # noqa: BLE001 (fail closed)
                composite, error = None, f'fallback:error:{type(e).__name__}'
            for k, (n, face_, lm, inputs, _) in enumerate(chunk):
                result = results[n]
                if composite is None:
                    record = error
                else:
                    try:
                        record = self._paste(items[n].image, result.image, lm, inputs, composite[k])
                    except Exception as e:  # noqa: BLE001 (fail closed)
                        record = f'fallback:error:{type(e).__name__}'
                if record.startswith('fallback:'):
                    base.blackout(result.image, face_)
                result.records[face_.index] = record
        return results

    def _paste(self, original, out, lm, inputs, composite) -> str:
        """Writes the mask region of one face (module docstring, 4); returns its record."""
        region = _polygon_region(lm, *original.shape[:2])
        if region is None:
            return 'fallback:bad_landmarks'  # The polygon has no pixel in the image.
        y0, x0, inside = region
        shape = inside.shape
        ok = covered(inputs.matrix, composite.shape[0], y0, x0, shape)
        warped = warp_to_image(composite, inputs.matrix, y0, x0, shape)
        pixels = np.clip(np.round(warped * 255.0), 0, 255).astype(np.uint8)
        view = out[y0 : y0 + shape[0], x0 : x0 + shape[1]]
        write, black = inside & ok, inside & ~ok
        view[write] = pixels[write]
        view[black] = 0  # Mask the crop does not cover: never the original face.
        before = original[y0 : y0 + shape[0], x0 : x0 + shape[1]]
        if self.check_unchanged and np.array_equal(view[inside], before[inside]):
            return base.UNCHANGED
        return MASK_OUTSIDE_CROP if black.any() else base.ANONYMIZED
