"""`sun2018`: every face of at least 10 px head-inpainted by the Sun2018 generator.

Safe Fakes' Sun2018 (`models/sun2018.py`; reference §3): black-out input, the 68 landmarks of
the original face, a U-Net that generates the whole crop, of which only the box is kept.

1. **Crop**: DeepPrivacy's (`deepprivacy.expand_box`: the box squared, each side grown by
   0.35 of it, the 1.7x zero-padded fallback), as the training crops are cut
   (`data/face_crops.py`); resized to the generator's resolution (bilinear).
2. The box in crop coordinates (`deepprivacy.box_in_crop`) is set to -1 (black) in the
   condition; the 68 landmarks of the keypoint source (`KeypointResult.landmarks68`, image
   pixels; default 'sidecar': the synthetic set's exact ones; 'dlib68': dlib's; 'none') are
   mapped into the crop and normalised `(x - x1 + 0.5) / side`. A face without landmarks runs
   with empty maps (NaN; the paper's "face-like blobs", reference §4 decision 7) and is recorded
   `anonymized:no_landmarks`.
3. The generator runs (inference: no dropout) in fixed batches of `face_batch` faces (the last
   padded), compiled once: the method is device-bound (the engine calls it in one process).
4. **Paste**: the output resized back to the crop's side, and only the tight box (clipped to
   the image) copied into the image (hard paste); every pixel outside the box keeps its value.

Faces narrower than 10 px stay as they are (`skipped:below_min_face_px`, paper Sec. IV-C); a
face that fails (any error) is blacked out and recorded `fallback:error:<Type>`.

Weights (`params`): a generator folder exported by `launch/train.py
--config=configs/sun2018_pipa.py` as `<workdir>/generator` (`conversion.json` format
`sun2018` with width and resolution); its files' sha256 and what trained it are in `params()`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from safefakes_jax.anonymizers import base, gan_base, generator_folder
from safefakes_jax.anonymizers import keypoints as keypoints_lib
from safefakes_jax.anonymizers.deepprivacy import box_in_crop, expand_box
from safefakes_jax.data import face_crops

NUM_LANDMARKS = 68
BLACKOUT_VALUE = -1.0  # As `models.sun2018.BLACKOUT_VALUE` (not imported: keeps JAX unloaded).
NO_LANDMARKS = 'anonymized:no_landmarks'
FORMAT = 'sun2018'
TRAIN_HINT = (
    'train one with: python launch/train.py --config=configs/sun2018_pipa.py:smoke '
    '--workdir=workdirs/sun2018_pipa_smoke (it exports <workdir>/generator)'
)


GeneratorNotFoundError = generator_folder.GeneratorNotFoundError


@functools.lru_cache(maxsize=4)
def load_generator(path: str) -> tuple[Any, Any, str, dict]:
    """(Generator module, params, sha256, conversion info) of an exported generator folder.

    Raises:
      GeneratorNotFoundError: no such folder or no checkpoint in it.
      ValueError: a checkpoint of another model.
    """
    from safefakes_jax.models import sun2018

    info, params, sha = generator_folder.read(path, (FORMAT,), 'Sun2018', TRAIN_HINT)
    model = sun2018.Generator(
        width=float(info.get('width', 1.0)), resolution=int(info.get('resolution', 128))
    )
    return model, params, sha, info


def landmarks_to_crop(landmarks: np.ndarray | None, crop_xyxy: np.ndarray) -> np.ndarray:
    """Image-pixel landmarks [68, 2] (or None) to normalised crop coordinates (NaN: absent)."""
    if landmarks is None:
        return np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
    side = int(crop_xyxy[2] - crop_xyxy[0])
    xy = face_crops.points_to_crop(np.asarray(landmarks, np.float64), crop_xyxy, side)
    return ((xy + 0.5) / side).astype(np.float32)


@base.register('sun2018')
@dataclasses.dataclass
class Sun2018(gan_base.GanAnonymizer):
    """The Sun2018 anonymizer (module docstring).

    Attributes:
      weights: the generator folder (`<workdir>/generator`); config key `anonymizer.params`.
      keypoints: the landmark source (`anonymizers.keypoints`): 'sidecar' (the synthetic
        set's exact 68 landmarks, passed by the engine), 'dlib68' or 'none'.
      face_batch: faces per generator call (the compiled batch size).
      batch_size: images per engine call.
    """

    weights: str = ''
    keypoints: str = 'sidecar'
    face_batch: int = 32
    batch_size: int = 8

    def __post_init__(self):
        if self.face_batch < 1 or self.batch_size < 1:
            raise ValueError('face_batch and batch_size must be >= 1')
        if self.keypoints not in ('sidecar', 'dlib68', 'none'):
            raise ValueError(
                f"keypoints must be 'sidecar', 'dlib68' or 'none' (sources with 68 landmarks), "
                f'got {self.keypoints!r}'
            )
        self._source = keypoints_lib.build(self.keypoints)
        self.needs_keypoints = self._source.uses_sidecar  # The engine reads the sidecar then.
        self._model = None  # Loaded (and checked) once, on first use or in params().

    def _load(self):
        if self._model is None:
            import jax

            model, params, sha, self._info = load_generator(
                self.weights and os.path.abspath(self.weights)
            )
            apply = jax.jit(lambda p, c, lm: model.apply({'params': p}, c, lm))
            self._model = (model, params, sha, apply)
        return self._model

    def params(self) -> dict[str, Any]:
        model, _, sha, _ = self._load()
        return self.generator_params(model, sha, self._info)

    def anonymize_batch(self, items: Sequence[base.Item]) -> list[base.Result]:
        results, selected = self.select_items(items)
        if not any(faces for _, _, faces in selected):
            return results  # Nothing to generate: the model is not needed.
        model, params, _, apply = self._load()
        jobs = []  # (item index, face, crop, condition, landmarks, found?)
        for n, (original, boxes, faces) in enumerate(selected):
            if not faces:
                continue
            found = self._source.locate(
                original, boxes, image_name=items[n].name, given=items[n].keypoints
            )
            for face in faces:
                try:
                    jobs.append((n, face, *self._prepare(original, face, found, model.resolution)))
                except Exception as e:  # noqa: BLE001 (fail closed)
                    base.blackout(results[n].image, face)
                    results[n].records[face.index] = f'fallback:error:{type(e).__name__}'
        for start in range(0, len(jobs), self.face_batch):
            chunk = jobs[start : start + self.face_batch]
            pad = self.face_batch - len(chunk)
            cond = np.stack([j[3] for j in chunk] + [np.zeros_like(chunk[0][3])] * pad)
            empty = np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
            lms = np.stack([j[4] for j in chunk] + [empty] * pad)
            try:
                generated = np.asarray(apply(params, cond, lms), np.float32)
            except Exception as e:  # noqa: BLE001 (fail closed)
                generated, error = None, f'fallback:error:{type(e).__name__}'
            for k, (n, face, crop, _, _, has_landmarks) in enumerate(chunk):
                result = results[n]
                if generated is None:
                    base.blackout(result.image, face)
                    result.records[face.index] = error
                    continue
                record = self._paste(items[n].image, result.image, face, crop, generated[k])
                if record == base.ANONYMIZED and not has_landmarks:
                    record = NO_LANDMARKS
                result.records[face.index] = record
        return results

    def _prepare(self, original, face, found, size):
        crop, _ = expand_box(face.box, *original.shape[:2])
        pixels = face_crops.cut(original, crop)
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        condition = pixels.astype(np.float32) / 127.5 - 1.0
        x1, y1, x2, y2 = box_in_crop(face, crop, size)
        condition[y1:y2, x1:x2] = BLACKOUT_VALUE
        lm = found[face.index].landmarks68
        return crop, condition, landmarks_to_crop(lm, crop), lm is not None

    def _paste(self, original, out, face, crop, generated) -> str:
        side = int(crop[2] - crop[0])
        face_rgb = ((np.clip(generated, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)
        face_rgb = cv2.resize(face_rgb, (side, side), interpolation=cv2.INTER_LINEAR)
        ys, xs = face.region
        patch = face_rgb[
            ys.start - crop[1] : ys.stop - crop[1], xs.start - crop[0] : xs.stop - crop[0]
        ]
        out[face.region] = patch
        if self.check_unchanged and np.array_equal(out[face.region], original[face.region]):
            base.blackout(out, face)
            return base.UNCHANGED
        return base.ANONYMIZED
