"""The CIAGAN train step: identity-network, critic and generator updates in the original's ratio.

Follows `dvl-tum/ciagan` `source/train.py` (`Train_GAN.train_siamese`, `train_critic`,
`train_generator`; reference §2). One call of the step is one of the original's outer
iterations: `n_identity` Siamese updates, then `n_critic` critic updates, then `n_generator`
generator updates (the paper's code default 1 / 5 / 1), each on a batch of its own, as the
original draws a new batch for every update (the critic even two: its fakes come from one, its
reals from another). The input (`data/ciagan_pairs.py`) therefore carries `sub_batches(...)`
= n_identity + 2 n_critic + n_generator sub-batches per example, [B, K, ...], consumed in that
order:

* `face`, `landmarks`, `target_face` uint8 [B, K, R, R, 3], `mask` uint8 [B, K, R, R, 1]
  (1 = generate), `identity` int32 [B, K] (the target identity: the pair's second face),
  `same` float32 [B, K] (the pair shares an identity).

Updates (images in [0, 1]; `composite = face * (1 - mask) + G(...) * mask`, not clipped, as
the original):

* identity network S: `contrastive(S(face), S(target_face), same)` (margin 3);
* critic D (LSGAN): `mse(D(composite, landmarks), 0) + mse(D(face', landmarks'), 1)`, the reals
  from the next sub-batch; the generator frozen;
* generator G: `mse(D(composite, landmarks), 1) + contrastive(S(composite), S(target_face), 1)`
  (weights 1 : 1), D and S frozen.

Every network runs in training mode whenever it runs, as in the original (whose frozen networks
stay in `train()`): each forward pass of a spectral-norm network runs and stores its power
iteration (the generator's also during the critic's updates), and the identity network's
BatchNorm uses and updates batch statistics also inside the generator's loss. Randomness: none
(the pairs and crops come from the input). Optimisers: Adam lr 1e-4, beta (0.5, 0.999) for all
three (`configs/ciagan_celeba.py`).

Metrics: `d_loss`, `d_real_loss`, `d_fake_loss`, `g_loss`, `g_gan`, `g_identity`,
`identity_loss`, `d_real`, `d_fake` (mean scores), `g_grad_norm`, `d_grad_norm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from safefakes_jax import sharding
from safefakes_jax.models import siamese_resnet
from safefakes_jax.train import state as state_lib

GENERATOR = 'generator'
DISCRIMINATOR = 'discriminator'
IDENTITY = 'identity'
BATCH_KEYS = ('face', 'landmarks', 'mask', 'target_face', 'identity', 'same')


def sub_batches(n_identity: int, n_critic: int, n_generator: int) -> int:
    """Sub-batches one step consumes: one per identity and generator update, two per critic."""
    return n_identity + 2 * n_critic + n_generator


def _inputs(batch: dict, k: int, num_classes: int) -> dict[str, jax.Array]:
    face = batch['face'][:, k].astype(jnp.float32) / 255.0
    mask = batch['mask'][:, k].astype(jnp.float32)
    return {
        'face': face,
        'mask': mask,
        'masked': face * (1.0 - mask),
        'landmarks': batch['landmarks'][:, k].astype(jnp.float32) / 255.0,
        'target': batch['target_face'][:, k].astype(jnp.float32) / 255.0,
        'onehot': jax.nn.one_hot(batch['identity'][:, k], num_classes, dtype=jnp.float32),
        'same': batch['same'][:, k].astype(jnp.float32),
    }


def _mse(x: jax.Array, target: float) -> jax.Array:
    return jnp.mean(jnp.square(x.astype(jnp.float32) - target))


def make_train_step(
    generator: Any,
    discriminator: Any,
    identity_net: Any,
    mesh: Mesh,
    *,
    n_identity: int = 1,
    n_critic: int = 5,
    n_generator: int = 1,
    margin: float = 3.0,
    identity_weight: float = 1.0,
) -> Callable:
    """The jit-compiled CIAGAN train step (module docstring).

    Args:
      generator, discriminator, identity_net: `ciagan.Generator`, `ciagan.Discriminator`,
        `siamese_resnet.SiameseResNet`.
      mesh: the device mesh (batch sharded on `data`, state replicated).
      n_identity, n_critic, n_generator: updates per step (the original's ITER_SIAMESE,
        ITER_CRITIC, ITER_GENERATOR).
      margin: the contrastive loss margin (3).
      identity_weight: the weight of the generator's identity term (1).

    Raises:
      ValueError: a negative count, or no critic or generator update.
    """
    if min(n_identity, n_critic, n_generator) < 0 or not (n_critic and n_generator):
        raise ValueError(
            f'update counts must be >= 0 with a critic and a generator update, got '
            f'identity {n_identity}, critic {n_critic}, generator {n_generator}'
        )
    num_classes = generator.num_classes
    mutable = ['batch_stats']

    def run(module, params, stats, *args):
        out, new = module.apply({'params': params, **stats}, *args, train=True, mutable=mutable)
        return out, {**stats, **new}

    def generate(g_params, g_stats, x):
        raw, g_stats = run(generator, g_params, g_stats, x['landmarks'], x['masked'], x['onehot'])
        return x['masked'] + raw * x['mask'], g_stats

    def s_loss_fn(params, stats, x):
        a, stats = run(identity_net, params, stats, x['face'])
        b, stats = run(identity_net, params, stats, x['target'])
        return siamese_resnet.contrastive_loss(a, b, x['same'], margin), stats

    def d_loss_fn(params, stats, fake, xf, xr):
        s_fake, stats = run(discriminator, params, stats, fake, xf['landmarks'])
        s_real, stats = run(discriminator, params, stats, xr['face'], xr['landmarks'])
        fake_loss, real_loss = _mse(s_fake, 0.0), _mse(s_real, 1.0)
        aux = {
            'd_fake_loss': fake_loss,
            'd_real_loss': real_loss,
            'd_fake': jnp.mean(s_fake),
            'd_real': jnp.mean(s_real),
        }
        return fake_loss + real_loss, (stats, aux)

    def g_loss_fn(params, stats, d_net, s_net, x):
        out, g_stats = generate(params, stats[0], x)
        score, d_stats = run(discriminator, d_net.params, stats[1], out, x['landmarks'])
        gan = _mse(score, 1.0)
        a, s_stats = run(identity_net, s_net.params, stats[2], out)
        b, s_stats = run(identity_net, s_net.params, s_stats, x['target'])
        ident = siamese_resnet.contrastive_loss(a, b, jnp.ones_like(x['same']), margin)
        return gan + identity_weight * ident, ((g_stats, d_stats, s_stats), gan, ident)

    def train_step(state: state_lib.TrainState, batch: dict, rng: jax.Array):
        del rng  # Every random choice is in the input.
        g, d, s = (state.nets[n] for n in (GENERATOR, DISCRIMINATOR, IDENTITY))
        g_stats, d_stats, s_stats = g.batch_stats, d.batch_stats, s.batch_stats
        k, metrics = 0, {}
        for _ in range(n_identity):
            x = _inputs(batch, k, num_classes)
            k += 1
            (loss, s_stats), grads = jax.value_and_grad(s_loss_fn, has_aux=True)(
                s.params, s_stats, x
            )
            s = s.apply_gradients(grads, s_stats)
            metrics['identity_loss'] = loss
        for _ in range(n_critic):
            xf, xr = _inputs(batch, k, num_classes), _inputs(batch, k + 1, num_classes)
            k += 2
            fake, g_stats = generate(g.params, g_stats, xf)
            (loss, (d_stats, aux)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
                d.params, d_stats, jax.lax.stop_gradient(fake), xf, xr
            )
            d = d.apply_gradients(d_grads, d_stats)
            metrics.update(d_loss=loss, **aux)
        for _ in range(n_generator):
            x = _inputs(batch, k, num_classes)
            k += 1
            (loss, (stats, gan, ident)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
                g.params, (g_stats, d_stats, s_stats), d, s, x
            )
            g_stats, d_stats, s_stats = stats
            g = g.apply_gradients(g_grads, g_stats)
            metrics.update(g_loss=loss, g_gan=gan, g_identity=ident)
        # The frozen networks' forward passes updated their state too (module docstring).
        d = d.replace(batch_stats=d_stats)
        s = s.replace(batch_stats=s_stats)
        if not n_identity:
            metrics['identity_loss'] = jnp.zeros((), jnp.float32)
        metrics.update(g_grad_norm=optax.tree.norm(g_grads), d_grad_norm=optax.tree.norm(d_grads))
        new_state = state.update(**{GENERATOR: g, DISCRIMINATOR: d, IDENTITY: s})
        return new_state.next_step(), metrics

    replicated = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
