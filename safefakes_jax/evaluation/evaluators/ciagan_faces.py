"""`ciagan_faces`: CIAGAN's generator on held-out faces, each asked for a random identity.

On the first `num_faces` faces of the val split (`config.data`, the source training uses; the
original's test view: centre crop, no augmentation) the generator, in evaluation mode (the
stored spectral-norm vectors), renders each face as a target identity drawn from the training
classes with a fixed seed, composited as the anonymizer does (`clip(y * mask + face * (1 -
mask), 0, 1)`). It reports

* `l1_mask`: mean |composite - original| inside the mask, in [0, 1] per channel (how far the
  generated region is from the original face; CIAGAN should change it);
* `l1`: the same over the whole crop (outside the mask the composite is the original);
* `faces`: the number evaluated;

and an image `faces`: for `grid_faces` faces, rows of the landmark image, the masked input,
the composite and the original.

Section keys (defaults in `DEFAULTS`): `num_faces`, `batch_size`, `grid_faces`, `network`,
`seed`. Built once: the faces are read, prepared and batched, and the generator compiled, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from safefakes_jax.data import ciagan_pairs, ciagan_sets
from safefakes_jax.evaluation import image_grids
from safefakes_jax.evaluation.evaluators import Context, Result

DEFAULTS: dict[str, Any] = {
    'type': 'ciagan_faces',
    'every_steps': 0,
    'final': False,
    'num_faces': 256,
    'batch_size': 64,
    'grid_faces': 8,
    'network': 'generator',
    'seed': 0,
}


class Evaluator:
    """CIAGAN's composites of held-out faces (module docstring)."""

    def __init__(self, name: str, section: Mapping[str, Any], context: Context):
        unknown = sorted(set(section) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f'config.evals.{name}: unknown keys {unknown} (known: {sorted(DEFAULTS)})'
            )
        o = self.options = DEFAULTS | dict(section)
        self.name, self.every_steps, self.final = name, int(o['every_steps']), bool(o['final'])
        self.network = o['network']
        model = context.models[self.network]
        r, nc = model.resolution, model.num_classes
        faces = ciagan_sets.load_faces(context.config.data, 'val', r)
        n = min(int(o['num_faces']), len(faces))
        if n == 0:
            raise ValueError(f'config.evals.{name}: no val faces in {context.config.data.val}')
        self.num_faces = n
        face, lndm, mask = (
            np.stack(x)
            for x in zip(*(ciagan_pairs.face_inputs(faces, i, r) for i in range(n)), strict=True)
        )
        target = np.random.default_rng(int(o['seed'])).integers(nc, size=n)
        bs = int(o['batch_size'])
        self.batches = []
        for start in range(0, n, bs):
            sl = slice(start, start + bs)
            pad = bs - len(face[sl])

            def padded(x, pad=pad):
                return np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x

            self.batches.append(
                {
                    'face': padded(face[sl]),
                    'landmarks': padded(lndm[sl]),
                    'mask': padded(mask[sl]),
                    'identity': padded(target[sl].astype(np.int32)),
                    'valid': np.arange(bs) < bs - pad,
                }
            )

        @jax.jit
        def generate(variables, face, landmarks, mask, identity):
            f = face.astype(jnp.float32) / 255.0
            m = mask.astype(jnp.float32)
            lm = landmarks.astype(jnp.float32) / 255.0
            onehot = jax.nn.one_hot(identity, nc, dtype=jnp.float32)
            y = model.apply(variables, lm, f * (1.0 - m), onehot)
            return jnp.clip(y * m + f * (1.0 - m), 0.0, 1.0), f, m

        self.generate = generate

    def run(self, state: Any, step: int) -> Result:
        net = state.nets[self.network]
        variables = {'params': net.eval_params, **net.batch_stats}
        l1 = l1_mask = pixels = mask_pixels = 0.0
        rows: list[list[np.ndarray]] = [[], [], [], []]
        for batch in self.batches:
            out, face, mask = jax.device_get(
                self.generate(
                    variables, batch['face'], batch['landmarks'], batch['mask'], batch['identity']
                )
            )
            valid = batch['valid']
            diff = np.abs(out - face)[valid]
            l1 += float(diff.sum())
            pixels += diff.size
            l1_mask += float((diff * mask[valid]).sum())
            mask_pixels += float(mask[valid].sum()) * 3
            want = int(self.options['grid_faces']) - len(rows[0])
            for i in np.flatnonzero(valid)[: max(want, 0)]:
                masked = face[i] * (1.0 - mask[i])
                rows[0].append(batch['landmarks'][i])
                for row, img in zip(rows[1:], (masked, out[i], face[i]), strict=True):
                    row.append((img * 255).round().astype(np.uint8))
        scalars = {
            'l1_mask': l1_mask / max(mask_pixels, 1.0),
            'l1': l1 / max(pixels, 1.0),
            'faces': float(self.num_faces),
        }
        images = {}
        if rows[0]:
            images['faces'] = image_grids.tile(sum(rows, []), cols=len(rows[0]))
        results = {f'{self.name}_{k}': v for k, v in scalars.items()} if self.final else {}
        return Result(scalars, images, results)
