"""The anonymizer interface: image + face boxes in, anonymized image + one record per face out.

Every anonymizer (conventional here, the GANs later) is a subclass of `Anonymizer`, registered
by name with `@register('blur')` so that a config can say `anonymizer.name = 'blur'` and
`create_from_config(config.anonymizer)` builds it with the config's other fields as
parameters.

Pixel bounds. A WIDER box `x y w h` covers columns x .. x+w-1 and rows y .. y+h-1, i.e. the
numpy slice `image[y0:y1, x0:x1]` with x1 = x + w, y1 = y + h (DeepPrivacy's slicing), clipped
to the image: x0 = max(x, 0), x1 = min(x + w, W), same for y. A box is

* `skipped:empty_box` when w <= 0 or h <= 0 (WIDER's dummy and degenerate rows),
* `skipped:outside_image` when nothing of it is left after clipping,
* `skipped:below_min_face_px` when the method has a minimum face size (`min_face_px` > 0,
  the GANs: 10 px, paper Sec. IV-C) and the annotated width w is below it;

every other box is anonymizable, and a box partly outside the image is anonymized on its
clipped part. Conventional methods have no minimum size: they anonymize every box.

Records (one string per annotated box, in annotation order):

* `anonymized`: the method replaced the face; `anonymized:<note>` when it did so in a reduced
  way the manifest should show (Sun2018 without landmarks: `anonymized:no_landmarks`).
* `skipped:<reason>`: the box was left alone (reasons above, or a method's own, e.g.
  pixelation of a box no larger than its cells, which would be the identity).
* `fallback:<reason>`: the method could not handle the face, so the box was blacked out
  (privacy fails closed, DESIGN.md). A method asks for this by raising `Fallback(reason)`;
  any other exception inside the method for that face becomes `fallback:error:<ExceptionType>`;
  a face the method reports as anonymized but left pixel-for-pixel unchanged (a blur of a flat
  region) is blacked out as well and becomes `fallback:unchanged`.

Faces are computed from the *original* image and written into a copy in annotation order, so
overlapping boxes do not feed each other (a later box overwrites an earlier one where they
overlap) and the result does not depend on how boxes overlap.

Randomness is passed in explicitly: `rng` is a `np.random.Generator` that the engine derives
per image from `(config.seed, image name)` (see `engine_worker.image_seed`); conventional methods
ignore it. Batching: `anonymize_batch(items)` loops over `anonymize` by default; methods that
benefit (GANs) override it and set `batch_size`, which the engine honours.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

ANONYMIZED = 'anonymized'
EMPTY_BOX = 'skipped:empty_box'
OUTSIDE_IMAGE = 'skipped:outside_image'
BELOW_MIN_FACE_PX = 'skipped:below_min_face_px'
UNCHANGED = 'fallback:unchanged'
_PREFIXES = ('skipped:', 'fallback:')
ANONYMIZED_NOTE = 'anonymized:'


def is_anonymized(record: str) -> bool:
    """Whether a face record says the method replaced the face (`anonymized[:<note>]`)."""
    return record == ANONYMIZED or record.startswith(ANONYMIZED_NOTE)


# Modules whose import registers the built-in methods; imported on the first name lookup so
# that heavy methods (GANs: JAX models) load only when asked for.
BUILTIN_MODULES: list[str] = [
    'safefakes_jax.anonymizers.conventional',
    'safefakes_jax.anonymizers.deepprivacy',
    'safefakes_jax.anonymizers.ciagan',
    'safefakes_jax.anonymizers.sun2018',
]

# Per-face keypoints: e.g. {'keypoints7': float [7, 3] (x, y, visible),
# 'landmarks68': float [68, 2]} as in the synthetic set's `landmarks/<split>.jsonl` sidecar.
FaceKeypoints = Mapping[str, np.ndarray]


class Fallback(Exception):  # noqa: N818 (a request, not an error)
    """Raised by a method for a face it cannot handle; the face is blacked out.

    Args:
      reason: short snake_case reason, recorded as `fallback:<reason>` (e.g. `no_keypoints`).
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Face:
    """One anonymizable face.

    Attributes:
      index: row of the box in the image's annotation.
      x0, y0, x1, y1: pixel bounds clipped to the image; the face is `image[y0:y1, x0:x1]`.
      box: the annotated `x y w h` (unclipped).
      keypoints: the face's keypoints, when the caller has them.
    """

    index: int
    x0: int
    y0: int
    x1: int
    y1: int
    box: tuple[int, int, int, int]
    keypoints: FaceKeypoints | None = None

    @property
    def region(self) -> tuple[slice, slice]:
        """The numpy index of the face: `image[face.region]`."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclasses.dataclass
class Item:
    """One image to anonymize (see `Anonymizer.anonymize` for the fields; `name` is its WIDER
    name `event/name.jpg`, for keypoint sources keyed by image, e.g. a COCO JSON)."""

    image: np.ndarray
    boxes: np.ndarray
    keypoints: Sequence[FaceKeypoints | None] | None = None
    rng: np.random.Generator | None = None
    name: str | None = None


@dataclasses.dataclass
class Result:
    """An anonymized image (RGB uint8 HWC, a new array) and one record per annotated box."""

    image: np.ndarray
    records: list[str]


def clip_box(box: Sequence[int], height: int, width: int) -> tuple[int, int, int, int] | str:
    """Pixel bounds `(x0, y0, x1, y1)` of a WIDER `x y w h` box, or its `skipped:` record."""
    x, y, w, h = (int(v) for v in box)
    if w <= 0 or h <= 0:
        return EMPTY_BOX
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return OUTSIDE_IMAGE
    return x0, y0, x1, y1


def check_image(image: np.ndarray) -> np.ndarray:
    """Returns `image` if it is RGB uint8 HWC; raises ValueError otherwise."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}')
    return image


def blackout(image: np.ndarray, face: Face) -> None:
    """Sets the face's pixels to 0 in place (the fail-closed replacement)."""
    image[face.region] = 0


class Anonymizer(abc.ABC):
    """Base class of all anonymizers.

    Subclasses implement `anonymize_face` (and optionally `anonymize_image` for whole-image
    work) and are usually frozen dataclasses whose fields are their parameters, so that
    `params()` and the engine's config hash see them.

    Class attributes:
      name: the registered name (set by `register`).
      min_face_px: faces narrower than this (annotated w) are `skipped:below_min_face_px`;
        0 = every box (conventional methods).
      batch_size: images per `anonymize_batch` call the engine makes.
      needs_keypoints: the engine passes per-face keypoints when it has them.
      check_unchanged: a face reported anonymized but left unchanged is blacked out and
        recorded `fallback:unchanged` (off for methods whose output cannot depend on the face,
        like blackout).
      for_output: False for internal methods (the benchmark's I/O floor) that must never
        produce a dataset; `create` refuses them.
    """

    name: ClassVar[str] = ''
    min_face_px: ClassVar[int] = 0
    batch_size: int = 1
    needs_keypoints: ClassVar[bool] = False
    check_unchanged: ClassVar[bool] = True
    for_output: ClassVar[bool] = True
    # True for a method that runs a model on an accelerator (the GANs): the engine then calls
    # `anonymize_batch` in one process only, in batches of exactly `batch_size` images, and
    # its worker processes only decode and encode (`engine._execute_device_bound`).
    device_bound: ClassVar[bool] = False
    # Config keys that name a field otherwise (e.g. `anonymizer.params` -> `weights`, since
    # `params()` is a method).
    config_aliases: ClassVar[dict[str, str]] = {}

    def params(self) -> dict[str, Any]:
        """The parameters that determine the output (dataclass fields by default).

        They go into the copy's config hash and, through `anonymization_config.json`, into
        every detector result trained on the copy. A learned method must include the sha256
        of its weights (`weights_sha256`), so that two checkpoints never share a hash.
        """
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        return {}

    def select_faces(
        self,
        boxes: np.ndarray,
        height: int,
        width: int,
        keypoints: Sequence[FaceKeypoints | None] | None = None,
    ) -> tuple[list[Face], list[str | None]]:
        """The anonymizable faces and the records so far (None where a face is pending)."""
        if keypoints is not None and len(keypoints) != len(boxes):
            raise ValueError(f'{len(keypoints)} keypoint entries for {len(boxes)} boxes')
        faces, records = [], []
        for i, box in enumerate(boxes):
            bounds = clip_box(box, height, width)
            if isinstance(bounds, str):
                records.append(bounds)
            elif self.min_face_px and int(box[2]) < self.min_face_px:
                records.append(BELOW_MIN_FACE_PX)
            else:
                records.append(None)
                faces.append(
                    Face(
                        i,
                        *bounds,
                        box=tuple(int(v) for v in box),
                        keypoints=None if keypoints is None else keypoints[i],
                    )
                )
        return faces, records

    def anonymize_image(
        self,
        original: np.ndarray,
        out: np.ndarray,
        faces: Sequence[Face],
        rng: np.random.Generator | None,
    ) -> None:
        """Optional whole-image step, run before the faces; writes into `out` in place.

        An exception here blacks out every face (`fallback:error:<Type>`).
        """
        del original, out, faces, rng  # Most methods work face by face only.

    @abc.abstractmethod
    def anonymize_face(
        self, original: np.ndarray, out: np.ndarray, face: Face, rng: np.random.Generator | None
    ) -> str | None:
        """Replaces one face: reads `original`, writes `out[face.region]` in place.

        Args:
          original: the input image (read only).
          out: the output image, already holding earlier faces' results.
          face: the face to replace.
          rng: the image's generator (None if the caller gave none).

        Returns:
          None or `ANONYMIZED`, or a `skipped:<reason>` record for a face the method leaves
          alone on purpose. Raise `Fallback(reason)` for a face it cannot handle.
        """

    def anonymize(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        keypoints: Sequence[FaceKeypoints | None] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Result:
        """Anonymizes every anonymizable face of one image.

        Args:
          image: RGB uint8 [H, W, 3]; not modified.
          boxes: int [N, 4] WIDER `x y w h` (N may be 0).
          keypoints: None, or one entry per box (None where a face has none).
          rng: the image's random generator (methods that need one fail without it).

        Returns:
          The new image and one record per box (see the module docstring).
        """
        original = check_image(image)
        boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
        faces, records = self.select_faces(boxes, *original.shape[:2], keypoints)
        out = original.copy()
        try:  # Also without faces: a whole-image method (fullblur) treats every image alike.
            self.anonymize_image(original, out, faces, rng)
        except Exception as e:  # noqa: BLE001 (fail closed on anything)
            _log_fallback(self, None, e)
            for face in faces:
                blackout(out, face)
                records[face.index] = f'fallback:error:{type(e).__name__}'
            return Result(out, records)
        for face in faces:
            records[face.index] = self._one_face(original, out, face, rng)
        return Result(out, records)

    def _one_face(self, original, out, face: Face, rng) -> str:
        try:
            status = self.anonymize_face(original, out, face, rng) or ANONYMIZED
        except Fallback as e:
            blackout(out, face)
            return f'fallback:{e.reason}'
        except Exception as e:  # noqa: BLE001 (fail closed on anything)
            _log_fallback(self, face, e)
            blackout(out, face)
            return f'fallback:error:{type(e).__name__}'
        if not isinstance(status, str) or (
            not is_anonymized(status) and not status.startswith(_PREFIXES)
        ):
            blackout(out, face)
            return 'fallback:error:bad_record'
        if status.startswith('fallback:'):
            blackout(out, face)  # Whatever the method left there.
        elif (
            is_anonymized(status)
            and self.check_unchanged
            and np.array_equal(out[face.region], original[face.region])
        ):
            blackout(out, face)  # "Anonymized" but identical: never let it through.
            return UNCHANGED
        return status

    def blackout_all(self, item: Item, reason: str) -> Result:
        """Blacks out every anonymizable face of `item`, recorded `fallback:<reason>` (what the
        engine does with an image whose batch call failed)."""
        original = check_image(item.image)
        boxes = np.asarray(item.boxes, np.int64).reshape(-1, 4)
        faces, records = self.select_faces(boxes, *original.shape[:2])
        out = original.copy()
        for face in faces:
            blackout(out, face)
            records[face.index] = f'fallback:{reason}'
        return Result(out, records)

    def anonymize_batch(self, items: Sequence[Item]) -> list[Result]:
        """Anonymizes several images; loops over `anonymize` unless a method overrides it."""
        return [self.anonymize(it.image, it.boxes, it.keypoints, it.rng) for it in items]

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        keypoints: Sequence[FaceKeypoints | None] | None = None,
        rng: np.random.Generator | None = None,
    ) -> Result:
        return self.anonymize(image, boxes, keypoints, rng)


def _log_fallback(method: Anonymizer, face: Face | None, error: Exception) -> None:
    where = 'the image' if face is None else f'face {face.index} {list(face.box)}'
    logging.warning(
        '%s failed on %s, blacked out: %s: %s',
        method.name or type(method).__name__,
        where,
        type(error).__name__,
        error,
    )


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Anonymizer]] = {}
_BUILTINS_LOADED = False


def register(name: str) -> Callable[[type[Anonymizer]], type[Anonymizer]]:
    """Class decorator: registers an `Anonymizer` subclass under `name`."""

    def wrap(cls: type[Anonymizer]) -> type[Anonymizer]:
        if not (isinstance(cls, type) and issubclass(cls, Anonymizer)):
            raise TypeError(f'register({name!r}) expects an Anonymizer subclass, got {cls!r}')
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f'anonymizer name {name!r} is already taken by {existing!r}')
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _BUILTINS_LOADED = True


def names() -> list[str]:
    """The registered names that can produce a dataset, sorted."""
    _load_builtins()
    return sorted(n for n, cls in _REGISTRY.items() if cls.for_output)


def get_class(name: str) -> type[Anonymizer]:
    """The class registered as `name`; a KeyError listing the known names otherwise."""
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f'unknown anonymizer {name!r}; known: {", ".join(names())}')
    return _REGISTRY[name]


def create(name: str, **params: Any) -> Anonymizer:
    """Builds the anonymizer registered as `name` with `params`.

    Raises:
      KeyError: unknown name.
      ValueError: an internal method (not for output), or bad / unknown parameters (the
        message names the method and its accepted parameters).
    """
    cls = get_class(name)
    if not cls.for_output:
        raise ValueError(f'anonymizer {name!r} is internal and cannot produce a dataset')
    for alias, field in cls.config_aliases.items():
        if alias in params:
            params[field] = params.pop(alias)
    try:
        return cls(**params)
    except TypeError as e:
        accepted = (
            [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        )
        raise ValueError(f'anonymizer {name!r}: {e} (parameters: {", ".join(accepted)})') from None


def create_from_config(config: Mapping[str, Any]) -> Anonymizer:
    """`create(config['name'], **other fields)`; takes a ConfigDict or a dict."""
    params = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
    if 'name' not in params:
        raise ValueError(f'anonymizer config needs a "name" (one of {", ".join(names())})')
    return create(params.pop('name'), **params)
