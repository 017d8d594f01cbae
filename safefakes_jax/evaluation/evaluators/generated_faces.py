"""What the GAN evaluators share: held-out face crops and the generator's faces for them.

`build` reads the first `num_faces` crops of the config's val split (`config.data`, the source
training uses, no augmentation), batches them (the last batch padded, `valid` marks real rows)
and compiles `generate(params, image, box, keypoints) -> (fake, real, mask, condition)`: the
network's output with z = 0 (as at anonymization time) and the real crop, both in [0, 1]
NHWC, the box mask, and the condition (box zeroed, in [-1, 1]).

A generator with an `inpaint(image, box, points)` method (Sun2018: its black-out condition)
is run through it instead, and one with `points_input = 'landmarks68'` gets the crops' 68
landmarks as the batches' `keypoints` (the generator's points input, whatever it is).

`MetricEvaluator` is the base of the metric evaluators (`ssim`, `lpips`, `fid`, `identity`):
they compare the generated face pasted into its box (`np.where(mask, fake, real)`, what the
anonymizer writes) with the real crop, on the EMA params.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from safefakes_jax.data import face_crop_pipeline, face_crops
from safefakes_jax.evaluation.evaluators import Context, Result
from safefakes_jax.models import deepprivacy, gan_layers


def build(context: Context, network: str, num_faces: int, batch_size: int):
    """(numpy batches, compiled generate, number of faces) (module docstring)."""
    config = context.config
    model = context.models[network]
    landmarks = getattr(model, 'points_input', 'keypoints') == 'landmarks68'
    crops = face_crops.load_split(config.data.source, config.data.val, 'val')
    crops = face_crops.subset(crops, min(num_faces, len(crops)), seed=0, shuffle=False)
    ds = face_crop_pipeline.make_gan_dataset(
        crops,
        batch_size=batch_size,
        resolution=config.model.resolution,
        seed=0,
        train=False,
        process_index=0,
        process_count=1,
        landmarks68=landmarks,
    )

    @jax.jit
    def generate(params, image, box, keypoints):
        if hasattr(model, 'inpaint'):
            out, real, mask, condition = model.apply(
                {'params': params}, image, box, keypoints, method='inpaint'
            )
            return (jnp.clip(out, -1.0, 1.0) + 1.0) / 2.0, (real + 1.0) / 2.0, mask, condition
        real, mask, condition = gan_layers.masked_condition(image, box)
        z = jnp.zeros((real.shape[0], *deepprivacy.Z_SHAPE), jnp.float32)
        out = model.apply({'params': params}, condition, keypoints, z).astype(jnp.float32)
        return (jnp.clip(out, -1.0, 1.0) + 1.0) / 2.0, (real + 1.0) / 2.0, mask, condition

    batches = list(face_crop_pipeline.as_numpy_batches(ds))
    if landmarks:
        for batch in batches:
            batch['keypoints'] = batch.pop('landmarks68')
    return batches, generate, len(crops)


class MetricEvaluator:
    """A metric of pasted generated faces against the real crops (module docstring).

    Subclasses set `DEFAULTS` (with `type`) and implement `measure(pairs) -> scalars`, where
    `pairs` yields `(pasted, real, box)` per batch: float32 [B, R, R, 3] in [0, 1] and the
    int32 [B, 4] box in crop pixels, padded rows removed.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = {}
    COMMON: ClassVar[dict[str, Any]] = {
        'every_steps': 0,
        'final': False,
        'num_faces': 256,
        'batch_size': 64,
        'network': 'generator',
    }

    def __init__(self, name: str, section: Mapping[str, Any], context: Context):
        known = self.COMMON | self.DEFAULTS
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ValueError(
                f'config.evals.{name}: unknown keys {unknown} (known: {sorted(known)})'
            )
        self.options = o = known | dict(section)
        self.name, self.every_steps, self.final = name, int(o['every_steps']), bool(o['final'])
        self.network = o['network']
        self.batches, self.generate, self.num_faces = build(
            context, self.network, int(o['num_faces']), int(o['batch_size'])
        )
        self.setup(context)

    def setup(self, context: Context) -> None:
        """Builds what `measure` needs once (models, weights)."""

    def pairs(self, params) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for batch in self.batches:
            fake, real, mask, _ = jax.device_get(
                self.generate(params, batch['image'], batch['box'], batch['keypoints'])
            )
            valid = np.asarray(batch['valid'], bool)
            pasted = np.where(mask > 0, fake, real)
            yield pasted[valid], real[valid], np.asarray(batch['box'])[valid]

    def measure(self, pairs) -> dict[str, float]:
        raise NotImplementedError

    def run(self, state: Any, step: int) -> Result:
        scalars = self.measure(self.pairs(state.nets[self.network].eval_params))
        scalars['faces'] = float(self.num_faces)
        results = {f'{self.name}_{k}': v for k, v in scalars.items()} if self.final else {}
        return Result(scalars, {}, results)
