"""The shared training loop with a two-network adversarial toy (`train/loop.py`, `state.py`).

A 2-layer generator and a spectral-norm discriminator on 8x8 images, D then G in one step, an
EMA of G: trained through `loop.run`, stopped, resumed, and compared with an uninterrupted run.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from safefakes_jax.train import loop, optim
from safefakes_jax.train import state as state_lib

Z = 4


class G(nn.Module):
    @nn.compact
    def __call__(self, z):
        x = nn.relu(nn.Dense(16)(z))
        return jnp.tanh(nn.Dense(64)(x)).reshape(-1, 8, 8, 1)


class D(nn.Module):
    @nn.compact
    def __call__(self, x, update_stats: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.SpectralNorm(nn.Dense(16))(x, update_stats=update_stats)
        return nn.Dense(1)(nn.leaky_relu(x, 0.2))[:, 0]


def _config(steps: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            train=dict(steps=steps, log_every=1),
            ckpt=dict(every_steps=0, max_to_keep=2),
            mesh=dict(num_devices=1),
            evals={},
            resume_with_changed_config=False,
        )
    )


def _task(mesh) -> loop.Task:
    g, d = G(), D()
    _, g_tx = optim.build({'name': 'adam', 'lr': 1e-2, 'b1': 0.5}, 4)
    _, d_tx = optim.build({'name': 'adam', 'lr': 1e-2, 'b1': 0.5}, 4)
    specs = {
        'generator': state_lib.Spec(lambda k: g.init(k, jnp.zeros((1, Z))), g_tx, ema_decay=0.9),
        'discriminator': state_lib.Spec(lambda k: d.init(k, jnp.zeros((1, 8, 8, 1))), d_tx),
    }

    def step(state, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        gn, dn = state.nets['generator'], state.nets['discriminator']
        z = jax.random.normal(rng, (batch['real'].shape[0], Z))
        fake = g.apply(gn.variables, z)

        def d_loss(params):
            out, stats = d.apply(
                {'params': params, **dn.batch_stats},
                jnp.concatenate([batch['real'], fake]),
                update_stats=True,
                mutable=['batch_stats'],
            )
            n = batch['real'].shape[0]
            return jnp.mean(nn.softplus(-out[:n])) + jnp.mean(nn.softplus(out[n:])), stats

        (dl, stats), dg = jax.value_and_grad(d_loss, has_aux=True)(dn.params)
        dn = dn.apply_gradients(dg, stats)

        def g_loss(params):
            return jnp.mean(nn.softplus(-d.apply(dn.variables, g.apply({'params': params}, z))))

        gl, gg = jax.value_and_grad(g_loss)(gn.params)
        new = state.update(generator=gn.apply_gradients(gg), discriminator=dn).next_step()
        return new, {'d_loss': dl, 'g_loss': gl, 'grad_norm': optax.tree.norm(gg)}

    def batches(position):
        while True:
            rng = np.random.default_rng(position)
            yield {
                'real': rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32) * 0.5 + 0.25,
                'position': np.array([position]),
            }
            position += 1

    return loop.Task(
        specs=specs,
        models={'generator': g, 'discriminator': d},
        train_step=jax.jit(step),
        batches=batches,
        shard=lambda b: {'real': jnp.asarray(b['real'])},
        finite_keys=('d_loss', 'g_loss'),
        batch_size=4,
        names_key='position',
    )


def _restored(workdir):
    from safefakes_jax import sharding
    from safefakes_jax.train import checkpoints

    mesh = sharding.make_mesh(1)
    ckpt = checkpoints.Checkpointer(workdir, 0, handle_sigterm=False, create=False)
    try:
        state, _ = ckpt.restore(state_lib.abstract(_task(mesh).specs, mesh))
    finally:
        ckpt.close()
    return state


def test_adversarial_toy_resumes_to_the_same_losses_and_spectral_norm_state(tmp_path):
    full = loop.run(_config(4), str(tmp_path / 'full'), _task)
    assert full['steps'] == 4 and len(full['history']) == 4
    assert {'d_loss', 'g_loss', 'grad_norm'} <= set(full['history'][0])
    cut = str(tmp_path / 'cut')
    first = loop.run(_config(4), cut, _task, stop_after=2)
    assert first['stopped_at'] == 2
    stopped = _restored(cut)
    second = loop.run(_config(4), cut, _task)
    assert second['steps'] == 4 and len(second['history']) == 2
    for a, b in zip(full['history'], first['history'] + second['history'], strict=True):
        for k in ('d_loss', 'g_loss', 'grad_norm'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)
    # The spectral-norm vector lives in batch_stats, was restored and moved on after resume.
    u = jax.tree.leaves(stopped.nets['discriminator'].batch_stats)
    assert u and not all(
        np.allclose(x, y)
        for x, y in zip(
            u, jax.tree.leaves(_restored(cut).nets['discriminator'].batch_stats), strict=True
        )
    )
    end_a, end_b = _restored(str(tmp_path / 'full')), _restored(cut)
    for a, b in zip(jax.tree.leaves(end_a), jax.tree.leaves(end_b), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
    g = end_b.nets['generator']
    assert g.ema is not None and not all(  # The EMA trails the params.
        np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(g.ema), jax.tree.leaves(g.params), strict=True)
    )
    assert end_b.nets['discriminator'].ema is None
