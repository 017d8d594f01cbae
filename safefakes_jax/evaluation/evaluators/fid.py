"""`fid`: FID between the generated faces, pasted into their boxes, and the real held-out crops
(`generated_faces`), with the FID Inception (`evaluation.fid`; section key `weights`, default
`pretrained/fid_inception`); scalar `fid`. Without the weights the evaluator fails when built,
with the command that imports them: a config that asks for FID gets FID or an error."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from safefakes_jax.evaluation import fid as fid_lib
from safefakes_jax.evaluation.evaluators import generated_faces


class Evaluator(generated_faces.MetricEvaluator):
    DEFAULTS: ClassVar[dict[str, Any]] = {'type': 'fid', 'weights': fid_lib.DEFAULT_WEIGHTS}

    def setup(self, context) -> None:
        self.features = fid_lib.load(self.options['weights'])

    def measure(self, pairs) -> dict[str, float]:
        a, b = [], []
        for pasted, real, _ in pairs:
            a.append(self.features(pasted))
            b.append(self.features(real))
        return {'fid': fid_lib.frechet_of_features(np.concatenate(a), np.concatenate(b))}
