"""The Sun2018 train step: one discriminator update, then one generator update, per batch.

`make_train_step` returns `train_step(state, batch, rng) -> (state, metrics)` for a state with
the networks `generator` and `discriminator` (`sun2018_trainer.specs`). The batch
(`face_crop_pipeline` with `landmarks68=True`, via `shard`) holds `image` uint8 [B, R, R, 3],
`box` int32 [B, 4] (`x1 y1 x2 y2` in pixels, the region to generate) and `landmarks68` float32
[B, 68, 2] (normalised, NaN = absent). Inside (pix2pix's objective, as Sun2018's stage 2):

* `real`, `mask` (1 inside the box) and `condition` (the box black, -1) from
  `sun2018.blackout_condition`; `fake = G(condition, landmarks)` in training mode (dropout, its
  key from `fold_in(rng, step)`; the same key in both updates, so the generator update sees
  the very fake the discriminator was trained on, as pix2pix computes it once per batch).
* Discriminator on patches of cat(image, condition[, landmark maps]):
  - `gan_loss='vanilla'` (pix2pix's default): `0.5 * (BCE(D(real), 1) + BCE(D(fake), 0))` on
    logits (means over patches and batch; pix2pix halves the sum to slow D down);
  - `gan_loss='lsgan'`: `0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2))`.
* Generator: `g_adv + l1_weight * g_l1` against the updated discriminator, with `g_adv` =
  `BCE(D(fake), 1)` (vanilla, non-saturating) or `mean((D(fake) - 1)^2)` (lsgan), and `g_l1` a
  weighted mean of |fake - real| over pixels and channels (images in [-1, 1], as pix2pix) with
  the weight map of `l1_region`:
  - `'weighted'` (default): 1 outside the box, 2 inside: PG2's pose-mask L1
    `|(G - x) * (1 + M)|` (Sun2018's lineage; the reference's "masked L1", decision 17), which
    stresses the generated face but keeps the context the discriminator sees reconstructed;
  - `'box'`: the box only (1 inside, 0 outside);
  - `'crop'`: the whole crop (pix2pix's L1).
  `l1_weight` is pix2pix's lambda, 100 (Sun2018's is not known).

No gradient penalty, no EMA by default (pix2pix has neither). The generator has no BatchNorm
(InstanceNorm, `models/sun2018.py`), so nothing goes to `batch_stats`.

Metrics: `d_loss`, `g_loss` (the total), `g_adv`, `g_l1`, `d_real`, `d_fake` (mean patch logits),
`g_grad_norm`, `d_grad_norm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from safefakes_jax import sharding
from safefakes_jax.models import sun2018
from safefakes_jax.train import state as state_lib

GENERATOR = 'generator'
DISCRIMINATOR = 'discriminator'
GAN_LOSSES = ('vanilla', 'lsgan')
L1_REGIONS = ('weighted', 'box', 'crop')


def l1_weights(mask: jax.Array, region: str) -> jax.Array:
    """The per-pixel L1 weight [B, R, R, 1] of `region` (module docstring) for a box mask."""
    if region == 'weighted':
        return 1.0 + mask
    if region == 'box':
        return mask
    if region == 'crop':
        return jnp.ones_like(mask)
    raise ValueError(f'l1_region must be one of {L1_REGIONS}, got {region!r}')


def weighted_l1(fake: jax.Array, real: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * |fake - real|) / sum(w) over pixels and channels (w broadcast over channels)."""
    w = jnp.broadcast_to(weights, fake.shape)
    return jnp.sum(w * jnp.abs(fake - real)) / jnp.maximum(jnp.sum(w), 1.0)


def make_train_step(
    generator: Any,
    discriminator: Any,
    mesh: Mesh,
    *,
    l1_weight: float = 100.0,
    gan_loss: str = 'vanilla',
    l1_region: str = 'weighted',
) -> Callable:
    """The jit-compiled Sun2018 train step (module docstring).

    Args:
      generator: the `sun2018.Generator` module.
      discriminator: the `sun2018.Discriminator` module.
      mesh: the device mesh (batch sharded on `data`, state replicated).
      l1_weight: the L1 term's weight (pix2pix's lambda, 100).
      gan_loss: 'vanilla' (BCE on logits, pix2pix) or 'lsgan'.
      l1_region: 'weighted' (box twice), 'box' or 'crop'.

    Raises:
      ValueError: an unknown `gan_loss` or `l1_region`.
    """
    if gan_loss not in GAN_LOSSES:
        raise ValueError(f'gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}')
    if l1_region not in L1_REGIONS:
        raise ValueError(f'l1_region must be one of {L1_REGIONS}, got {l1_region!r}')

    def real_loss(logits):  # The loss of calling these logits real.
        if gan_loss == 'vanilla':
            return jnp.mean(jax.nn.softplus(-logits))  # BCE(sigmoid(logits), 1).
        return jnp.mean(jnp.square(logits - 1.0))

    def fake_loss(logits):
        if gan_loss == 'vanilla':
            return jnp.mean(jax.nn.softplus(logits))
        return jnp.mean(jnp.square(logits))

    def train_step(state: state_lib.TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        g, d = state.nets[GENERATOR], state.nets[DISCRIMINATOR]
        real, mask, condition = sun2018.blackout_condition(batch['image'], batch['box'])
        landmarks = batch['landmarks68']
        n = real.shape[0]
        weights = l1_weights(mask, l1_region)

        def generate(params):
            variables = {**g.batch_stats, 'params': params}
            out = generator.apply(variables, condition, landmarks, True, rngs={'dropout': rng})
            return out.astype(jnp.float32)

        def critic(params, image, cond, lms):
            return discriminator.apply({**d.batch_stats, 'params': params}, image, cond, lms)

        fake = jax.lax.stop_gradient(generate(g.params))

        def d_loss_fn(params):
            both = critic(
                params,
                jnp.concatenate([real, fake]),
                jnp.concatenate([condition, condition]),
                jnp.concatenate([landmarks, landmarks]),
            )
            d_real, d_fake = both[:n], both[n:]
            loss = 0.5 * (real_loss(d_real) + fake_loss(d_fake))
            return loss, {'d_real': jnp.mean(d_real), 'd_fake': jnp.mean(d_fake)}

        (d_loss, aux), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        d = d.apply_gradients(d_grads)

        def g_loss_fn(params):
            out = generate(params)
            adv = real_loss(critic(d.params, out, condition, landmarks))
            l1 = weighted_l1(out, real, weights)
            return adv + l1_weight * l1, {'g_adv': adv, 'g_l1': l1}

        (g_loss, g_aux), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
        g = g.apply_gradients(g_grads)
        metrics = {
            'd_loss': d_loss,
            'g_loss': g_loss,
            **g_aux,
            **aux,
            'g_grad_norm': optax.tree.norm(g_grads),
            'd_grad_norm': optax.tree.norm(d_grads),
        }
        return state.update(**{GENERATOR: g, DISCRIMINATOR: d}).next_step(), metrics

    replicated = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
