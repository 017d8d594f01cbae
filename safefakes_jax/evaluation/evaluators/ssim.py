"""`ssim`: SSIM (Wang et al. 2004, `image_metrics.ssim`) of the generated faces, pasted into
their boxes, against the real held-out crops (`generated_faces`); scalar `ssim`."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from safefakes_jax.evaluation import image_metrics
from safefakes_jax.evaluation.evaluators import generated_faces


class Evaluator(generated_faces.MetricEvaluator):
    DEFAULTS: ClassVar[dict[str, Any]] = {'type': 'ssim'}

    def measure(self, pairs) -> dict[str, float]:
        values = [np.asarray(image_metrics.ssim(a, b)) for a, b, _ in pairs]
        return {'ssim': float(np.concatenate(values).mean())}
