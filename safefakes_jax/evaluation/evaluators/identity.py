"""`identity`: how much of the real person survives in the generated faces (`evaluation.
identity`): dlib descriptors of each real held-out crop and of the generated face pasted into
its box, both aligned with the real crop's landmarks in the box; scalars `mean_distance`,
`match_rate` (< 0.6), `rank1` / `rank5` re-identification among the held-out faces, `fid_dlib`.
Crops are upscaled to `chip_px` (default 160) first: dlib's chip is 150 px."""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from safefakes_jax.anonymizers import identity as identity_model
from safefakes_jax.evaluation import identity
from safefakes_jax.evaluation.evaluators import generated_faces


def _uint8(x: np.ndarray, size: int) -> np.ndarray:
    image = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


class Evaluator(generated_faces.MetricEvaluator):
    DEFAULTS: ClassVar[dict[str, Any]] = {'type': 'identity', 'chip_px': 160}

    def setup(self, context) -> None:
        self.model = identity_model.load()

    def measure(self, pairs) -> dict[str, float]:
        size = int(self.options['chip_px'])
        a, b = [], []
        for pasted, real, boxes in pairs:
            scale = size / real.shape[1]
            for p, r, box in zip(pasted, real, boxes, strict=True):
                x1, y1, x2, y2 = (np.asarray(box, np.float64) * scale).round().astype(int)
                xywh = (x1, y1, max(1, x2 - x1), max(1, y2 - y1))
                da, db = self.model.descriptor_pairs(_uint8(r, size), _uint8(p, size), [xywh])
                a.append(da)
                b.append(db)
        summary = identity.summarize(np.concatenate(a), np.concatenate(b))
        keys = ('mean_distance', 'match_rate', 'rank1', 'rank5', 'fid_dlib')
        return {k: float(summary[k]) for k in keys if summary.get(k) is not None}
