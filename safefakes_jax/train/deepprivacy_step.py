"""The DeepPrivacy train step: one discriminator update, then one generator update, per batch.

`make_train_step` returns `train_step(state, batch, rng) -> (state, metrics)` for a state with
the networks `generator` (with EMA) and `discriminator` (`deepprivacy_trainer.specs`). The
batch (`face_crop_pipeline` via `shard`) holds `image` uint8 [B, R, R, 3], `box` int32 [B, 4]
(`x1 y1 x2 y2` in pixels, the region to generate) and `keypoints` float32 [B, 7, 2] (normalised,
NaN = absent). Inside:

* `real`, `mask` (1 inside the box) and `condition` from `gan_layers.masked_condition`; the
  'v2' discriminator takes `1 - mask` (the original's convention); `z` ~ N(0, 1),
  [B, 4, 4, 32], from `fold_in(rng, step)`.
* Discriminator (WGAN): `mean(D(fake)) - mean(D(real))`, plus `eps_weight * mean(D(real)^2)`
  (the epsilon penalty; DeepPrivacy's 0.001), plus the gradient penalty on interpolates
  `x = e * real + (1 - e) * fake` (per-sample e ~ U(0, 1)), weight `gp_weight` (10):
  - `gp='v2'` (default; the refactored DeepPrivacy): one-sided `relu(|g| - 1)`, not squared, with
    the gradient masked to the box (`mask_region_only`), computed lazily every `lazy_every`
    steps (16) and scaled by it;
  - `gp='v1'` (ISVC'19): two-sided `(|g| - 1)^2` over the whole image, every step.
* Generator: `-mean(D(G(condition, keypoints, z)))` against the updated discriminator; the EMA
  of the generator follows (`state.Network.apply_gradients`).

Deviation from DeepPrivacy-v1: losses are batch means, not sums (reference §4, decision 4), so
the learning rate does not depend on the batch size. The discriminator sees the raw generator
output (the whole crop), as both original versions do.

Metrics: `d_loss`, `g_loss`, `wasserstein` (D(real) - D(fake)), `gradient_penalty` (the raw
penalty; 0 on lazy steps that skip it), `epsilon_penalty`, `d_real`, `d_fake`, `g_grad_norm`,
`d_grad_norm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from safefakes_jax import sharding
from safefakes_jax.models import deepprivacy, gan_layers
from safefakes_jax.train import state as state_lib

GENERATOR = 'generator'
DISCRIMINATOR = 'discriminator'
GP_MODES = ('v1', 'v2')
Z_SHAPE = deepprivacy.Z_SHAPE


def make_train_step(
    generator: Any,
    discriminator: Any,
    mesh: Mesh,
    *,
    gp: str = 'v2',
    gp_weight: float = 10.0,
    eps_weight: float = 0.001,
    lazy_every: int = 16,
) -> Callable:
    """The jit-compiled DeepPrivacy train step (module docstring).

    Args:
      generator: the `deepprivacy.Generator` module.
      discriminator: the `deepprivacy.Discriminator` module (v1 or v2 inputs).
      mesh: the device mesh (batch sharded on `data`, state replicated).
      gp: the gradient-penalty variant, 'v2' or 'v1'.
      gp_weight: its weight.
      eps_weight: the weight of the epsilon penalty.
      lazy_every: with 'v2', the penalty runs every this many steps, scaled by it (1: every
        step).

    Raises:
      ValueError: an unknown `gp`.
    """
    if gp not in GP_MODES:
        raise ValueError(f'gp must be one of {GP_MODES}, got {gp!r}')
    lazy = max(1, int(lazy_every)) if gp == 'v2' else 1
    uses_mask = getattr(discriminator, 'variant', 'v1') == 'v2'

    def critic(params, variables, image, condition, keypoints, mask):
        # The v2 discriminator's mask is 1 outside the box (DeepPrivacy-v2 `fdf.py`).
        args = (image, condition, keypoints) + ((1.0 - mask,) if uses_mask else ())
        return discriminator.apply({**variables, 'params': params}, *args).reshape(-1)

    def train_step(state: state_lib.TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        rz, re = jax.random.split(rng)
        g, d = state.nets[GENERATOR], state.nets[DISCRIMINATOR]
        real, mask, condition = gan_layers.masked_condition(batch['image'], batch['box'])
        keypoints = batch['keypoints']
        n = real.shape[0]
        z = jax.random.normal(rz, (n, *Z_SHAPE), jnp.float32)
        fake = jax.lax.stop_gradient(generator.apply(g.variables, condition, keypoints, z))
        fake = fake.astype(jnp.float32)

        def penalty(params):
            e = jax.random.uniform(re, (n, 1, 1, 1))
            x = e * real + (1.0 - e) * fake

            def total(x):
                return jnp.sum(critic(params, d.batch_stats, x, condition, keypoints, mask))

            grad = jax.grad(total)(x)
            if gp == 'v2':
                grad = grad * mask
            norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(1, 2, 3)) + 1e-12)
            if gp == 'v2':
                return jnp.mean(jax.nn.relu(norm - 1.0))
            return jnp.mean(jnp.square(norm - 1.0))

        def d_loss_fn(params):
            both = critic(
                params,
                d.batch_stats,
                jnp.concatenate([real, fake]),
                jnp.concatenate([condition, condition]),
                jnp.concatenate([keypoints, keypoints]),
                jnp.concatenate([mask, mask]),
            )
            d_real, d_fake = both[:n], both[n:]
            wasserstein = jnp.mean(d_real) - jnp.mean(d_fake)
            eps = jnp.mean(jnp.square(d_real))
            if lazy > 1:
                gp_value = jax.lax.cond(
                    state.step % lazy == 0, penalty, lambda p: jnp.zeros((), jnp.float32), params
                )
            else:
                gp_value = penalty(params)
            loss = -wasserstein + eps_weight * eps + gp_weight * lazy * gp_value
            aux = {
                'wasserstein': wasserstein,
                'gradient_penalty': gp_value,
                'epsilon_penalty': eps,
                'd_real': jnp.mean(d_real),
                'd_fake': jnp.mean(d_fake),
            }
            return loss, aux

        (d_loss, aux), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
        d = d.apply_gradients(d_grads)

        def g_loss_fn(params):
            out = generator.apply({**g.batch_stats, 'params': params}, condition, keypoints, z)
            scores = critic(
                d.params, d.batch_stats, out.astype(jnp.float32), condition, keypoints, mask
            )
            return -jnp.mean(scores)

        g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g.params)
        g = g.apply_gradients(g_grads)
        metrics = {
            'd_loss': d_loss,
            'g_loss': g_loss,
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
