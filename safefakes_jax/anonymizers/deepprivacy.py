"""`deepprivacy`: every face of at least 10 px replaced by the DeepPrivacy generator.

Follows DeepPrivacy's inference (`deep_privacy/box_utils.py`, `inference/`; reference §1):

1. **Crop** (`expand_box`): the box made square by growing its short side (centred, shifted
   back into the image), then each side grown by `int(0.35 * side)` as far as the image allows
   (the square is shifted to stay inside). When that is impossible (a box wider or taller than
   the image's short side, or a square that cannot stay inside), the original falls back to a
   centred square of side 1.7 x max(w, h), zero-padded outside the image; so does this one
   (`fallback` in the crop record).
2. The crop is resized to the generator's resolution (bilinear, as DeepPrivacy-v1), the box in
   crop coordinates (`int((b - origin) * R / side)`) is zeroed in the condition (0 in [-1, 1]),
   the keypoints (`keypoints` source, default the synthetic sidecar) are mapped into the crop
   and normalised; absent ones are NaN, so a face without keypoints runs with empty maps
   (reference §4, decision 7).
3. The EMA generator runs with z = 0 (`z='zero'`; `z='random'` draws z from the image's rng)
   in fixed batches of `face_batch` faces (the last padded), compiled once: the method is
   device-bound (the engine calls it in one process).
4. **Paste**: the output, clipped to [-1, 1], is resized back to the crop's side and only the
   pixels of the tight box (clipped to the image) are copied into the image (hard paste, as
   DeepPrivacy-v2's `stitch_faces`); every pixel outside the box keeps its value.

Deviation from the original, which silently skips boxes without a matched person: every box of
at least `min_face_px` (10) is anonymized; a face that fails (any error) is blacked out and
recorded `fallback:<reason>`; faces narrower than 10 px stay as they are, recorded
`skipped:below_min_face_px` (paper Sec. IV-C).

Weights (`params`): a folder holding a generator checkpoint, either written by
`tools/convert_torch_weights.py --format=deepprivacy_v1` from the original ISVC'19 checkpoint,
or exported by `launch/train.py --config=configs/deepprivacy_*.py` as `<workdir>/generator`
(the EMA generator). Its `conversion.json` says the network's width and resolution; the sha256
of its files is in `params()` (the copy's provenance).
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
from safefakes_jax.data import face_crops

EXPANSION = 0.35
FALLBACK_EXPANSION = 0.7  # DeepPrivacy's `expand_bbox_simple(bbox, 2 * 0.35)`.
FORMATS = ('deepprivacy_v1', 'deepprivacy')
TRAIN_HINT = (
    'train one with: python launch/train.py --config=configs/deepprivacy_fdf.py:smoke '
    '--workdir=workdirs/deepprivacy_fdf_smoke (it exports <workdir>/generator), or convert the '
    'original weights with: python tools/convert_torch_weights.py --format=deepprivacy_v1 '
    '--src=FILE --out=DIR'
)


GeneratorNotFoundError = generator_folder.GeneratorNotFoundError
folder_sha256 = generator_folder.folder_sha256


def _square(x0: int, y0: int, w: int, h: int, height: int, width: int) -> tuple[int, int, int]:
    """DeepPrivacy's `quadratic_bounding_box`: (x0, y0, side) of a square holding the box."""
    if w > min(height, width) or h > min(height, width):
        raise ValueError('box larger than the image')
    if w != h:
        diff = abs(w - h)
        if h < w:
            h += diff
            y0 = max(0, y0 - diff // 2)
        else:
            w += diff
            x0 = max(0, x0 - diff // 2)
        x0 -= max(0, x0 + w - width)
        y0 -= max(0, y0 + h - height)
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError('square outside the image')
    return x0, y0, w


def expand_box(box_xywh: Sequence[int], height: int, width: int) -> tuple[np.ndarray, bool]:
    """The square crop `x1 y1 x2 y2` of a WIDER box (module docstring) and whether it is the
    1.7x fallback (which may leave the image: zero padding)."""
    x, y, w, h = (int(v) for v in box_xywh)
    try:
        x0, y0, side = _square(max(x, 0), max(y, 0), w, h, height, width)
        e = min((height - side) // 2, (width - side) // 2, int(side * EXPANSION))
        if e > 0:
            x0, y0, side = max(0, x0 - e), max(0, y0 - e), side + 2 * e
            x0 -= max(0, x0 + side - width)
            y0 -= max(0, y0 + side - height)
        crop = np.array([x0, y0, x0 + side, y0 + side], np.int64)
        inside = x0 >= 0 and y0 >= 0 and crop[2] <= width and crop[3] <= height
        holds = crop[0] <= x and crop[1] <= y and crop[2] >= x + w and crop[3] >= y + h
        if inside and holds:
            return crop, False
    except ValueError:
        pass
    cx, cy = x + w // 2, y + h // 2
    half = int(max(w, h) * (1 + FALLBACK_EXPANSION)) // 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.int64), True


def box_in_crop(face: base.Face, crop_xyxy: np.ndarray, size: int) -> np.ndarray:
    """DeepPrivacy's box in crop pixels: `int((b - origin) * size / side)`, clipped to the crop."""
    side = crop_xyxy[2] - crop_xyxy[0]
    x, y, w, h = face.box
    b = np.array([x, y, x + w, y + h], np.float64) - crop_xyxy[[0, 1, 0, 1]]
    return np.clip((b * size / side).astype(np.int64), 0, size)


@functools.lru_cache(maxsize=4)
def load_generator(path: str) -> tuple[Any, Any, str, dict]:
    """(Generator module, params, sha256, conversion info) of a generator folder (module docstring).

    Raises:
      GeneratorNotFoundError: no such folder or no checkpoint in it.
      ValueError: a checkpoint of another model.
    """
    from safefakes_jax.models import deepprivacy

    info, params, sha = generator_folder.read(path, FORMATS, 'DeepPrivacy', TRAIN_HINT)
    model = deepprivacy.Generator(
        width=float(info.get('width', 1.0)), resolution=int(info.get('resolution', 128))
    )
    return model, params, sha, info


@base.register('deepprivacy')
@dataclasses.dataclass
class DeepPrivacy(gan_base.GanAnonymizer):
    """The DeepPrivacy anonymizer (module docstring).

    Attributes:
      weights: the generator folder (a conversion or `<workdir>/generator`); the config key
        is `anonymizer.params` (`config_aliases`).
      keypoints: the keypoint source (`anonymizers.keypoints`): 'sidecar' (the synthetic
        set's exact keypoints, passed by the engine), 'dlib68', 'coco_json' (people from a
        COCO-keypoints JSON, `keypoints_path`, matched by image name) or 'none'.
      keypoints_path: the COCO-keypoints JSON of `keypoints='coco_json'`.
      z: 'zero' (DeepPrivacy's inference) or 'random' (from the image's rng).
      face_batch: faces per generator call (the compiled batch size).
      batch_size: images per engine call.
    """

    weights: str = ''
    keypoints: str = 'sidecar'
    keypoints_path: str = ''
    z: str = 'zero'
    face_batch: int = 32
    batch_size: int = 8

    def __post_init__(self):
        if self.z not in ('zero', 'random'):
            raise ValueError(f"z must be 'zero' or 'random', got {self.z!r}")
        if self.face_batch < 1 or self.batch_size < 1:
            raise ValueError('face_batch and batch_size must be >= 1')
        if self.keypoints_path and self.keypoints != 'coco_json':
            raise ValueError("keypoints_path is read by keypoints='coco_json' only")
        options = {'path': self.keypoints_path} if self.keypoints == 'coco_json' else {}
        self._source = keypoints_lib.build(self.keypoints, **options)
        self.needs_keypoints = self._source.uses_sidecar  # The engine reads the sidecar then.
        self._model = None  # Loaded (and checked) once, on first use or in params().

    def _load(self):
        if self._model is None:
            import jax

            model, params, sha, self._info = load_generator(
                self.weights and os.path.abspath(self.weights)
            )
            apply = jax.jit(lambda p, c, k, z: model.apply({'params': p}, c, k, z))
            self._model = (model, params, sha, apply)
        return self._model

    def params(self) -> dict[str, Any]:
        model, _, sha, _ = self._load()
        return self.generator_params(model, sha, self._info, drop=('keypoints_path',))

    def anonymize_batch(self, items: Sequence[base.Item]) -> list[base.Result]:
        results, selected = self.select_items(items)
        if not any(faces for _, _, faces in selected):
            return results  # Nothing to generate: the model is not needed.
        model, params, _, apply = self._load()
        jobs = []  # (item index, face, crop, fallback, condition, keypoints, z)
        for n, (original, boxes, faces) in enumerate(selected):
            if not faces:
                continue
            found = self._source.locate(
                original, boxes, image_name=items[n].name, given=items[n].keypoints
            )
            for face in faces:
                try:
                    prepared = self._prepare(original, face, found, model.resolution, items[n].rng)
                    jobs.append((n, face, *prepared))
                except Exception as e:  # noqa: BLE001 (fail closed)
                    base.blackout(results[n].image, face)
                    results[n].records[face.index] = f'fallback:error:{type(e).__name__}'
        for start in range(0, len(jobs), self.face_batch):
            chunk = jobs[start : start + self.face_batch]
            pad = self.face_batch - len(chunk)
            cond = np.stack([j[4] for j in chunk] + [np.zeros_like(chunk[0][4])] * pad)
            kps = np.stack([j[5] for j in chunk] + [np.full((7, 2), np.nan, np.float32)] * pad)
            z = np.stack([j[6] for j in chunk] + [np.zeros_like(chunk[0][6])] * pad)
            try:
                generated = np.asarray(apply(params, cond, kps, z), np.float32)
            except Exception as e:  # noqa: BLE001 (fail closed)
                generated = None
                error = f'fallback:error:{type(e).__name__}'
            for k, (n, face, crop, _, _, _, _) in enumerate(chunk):
                result = results[n]
                if generated is None:
                    base.blackout(result.image, face)
                    result.records[face.index] = error
                    continue
                result.records[face.index] = self._paste(
                    items[n].image, result.image, face, crop, generated[k]
                )
        return results

    def _prepare(self, original, face, found, size, rng):
        crop, fallback = expand_box(face.box, *original.shape[:2])
        side = int(crop[2] - crop[0])
        pixels = face_crops.cut(original, crop)  # Then bilinear, as DeepPrivacy-v1.
        pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        condition = pixels.astype(np.float32) / 127.5 - 1.0
        x1, y1, x2, y2 = box_in_crop(face, crop, size)
        condition[y1:y2, x1:x2] = 0.0
        kp = found[face.index].points
        kps = (
            np.full((7, 2), np.nan, np.float32)
            if kp is None
            else keypoints_lib.to_crop(kp, crop, side).astype(np.float32)
        )
        if self.z == 'random':
            if rng is None:
                raise ValueError("z='random' needs the image's rng")
            z = rng.standard_normal((4, 4, 32)).astype(np.float32)
        else:
            z = np.zeros((4, 4, 32), np.float32)
        return crop, fallback, condition, kps, z

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
