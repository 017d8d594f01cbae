"""What the GAN anonymizers (DeepPrivacy, CIAGAN, Sun2018) share.

`GanAnonymizer` is their base: a device-bound method of at least 10 px faces whose weights
folder is `anonymizer.params` (field `weights`), which needs per-face keypoints and works only
in batches (`anonymize` is a batch of one). It gives them

* `select_items`: each item's checked image, a copy to write into, and its anonymizable faces
  (`Anonymizer.select_faces`);
* `generator_params`: the common part of `params()`: the fields that make the output (not the
  weights' path, nor the engine batch size), the weights' sha256, the resolution, the keypoint
  source, and what trained the generator (`dataset`, `step`, `train_faces` of a training
  export; a conversion records none of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from safefakes_jax.anonymizers import base

TRAINED_BY = ('dataset', 'step', 'train_faces')


class GanAnonymizer(base.Anonymizer):
    """The base of the GAN anonymizers (module docstring); subclasses are dataclasses with
    `weights` and `batch_size` fields and set `self._source` (their keypoint source)."""

    config_aliases: ClassVar[dict[str, str]] = {'params': 'weights'}
    min_face_px: ClassVar[int] = 10
    needs_keypoints: ClassVar[bool] = True
    device_bound: ClassVar[bool] = True

    def anonymize_face(self, original, out, face, rng):  # pragma: no cover (batched only)
        raise NotImplementedError(f'{self.name} runs through anonymize_batch')

    def anonymize(self, image, boxes, keypoints=None, rng=None, name=None) -> base.Result:
        return self.anonymize_batch([base.Item(image, boxes, keypoints, rng, name)])[0]

    def select_items(
        self, items: Sequence[base.Item]
    ) -> tuple[list[base.Result], list[tuple[np.ndarray, np.ndarray, list[base.Face]]]]:
        """(one result per item: a copy of its image and its records so far, and per item
        (original image, int [N, 4] boxes, its anonymizable faces))."""
        results, selected = [], []
        for item in items:
            original = base.check_image(item.image)
            boxes = np.asarray(item.boxes, np.int64).reshape(-1, 4)
            faces, records = self.select_faces(boxes, *original.shape[:2], item.keypoints)
            results.append(base.Result(original.copy(), records))
            selected.append((original, boxes, faces))
        return results, selected

    def generator_params(
        self, model: Any, sha: str, info: Mapping[str, Any], drop: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The common part of `params()` (module docstring); `drop` names more fields that do
        not make the output."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ('weights', 'batch_size', *drop):
            del fields[name]
        return fields | {
            'weights_sha256': sha,
            'resolution': model.resolution,
            'keypoint_source': self._source.params(),  # A JSON's sha256, not its path.
            'generator': {k: info[k] for k in TRAINED_BY if k in info},
        }
