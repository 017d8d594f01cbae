"""DSFD train step: one device vs 8 fake CPU devices, schedule, optimiser, preprocessing.

The model (width 1/16, 64x64, 16 boxes, batch 8, lr 2.5e-4 over 2 steps) is the one of
`test_train_detector`, so with the shared persistent compilation cache the init and the
8-device step compile once per session.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax import sharding
from safefakes_jax.detection import anchors
from safefakes_jax.models import dsfd
from safefakes_jax.train import detector_step, optim
from safefakes_jax.train import state as state_lib

# Identical programs compile once across the module's tests (see conftest).
pytestmark = pytest.mark.usefixtures('jax_compile_cache')

S = 64
B = 8
M = 16
STEPS = 2


def _batch(step: int) -> dict:
    rng = np.random.default_rng(step)
    x1 = rng.uniform(0, S - 30, (B, M, 2))
    wh = rng.uniform(8, 28, (B, M, 2))
    boxes = np.concatenate([x1, x1 + wh], -1).astype(np.float32)
    mask = np.arange(M) < rng.integers(1, 4, (B, 1))
    boxes[~mask] = 0
    image = rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    return {'image': image, 'boxes': boxes, 'box_mask': mask}


SGD = {
    'name': 'sgd',
    'lr': 2.5e-4,
    'momentum': 0.9,
    'weight_decay': 5e-4,
    'decay_fractions': optim.DECAY_FRACTIONS,
}


def _setup(dtype=jnp.float32):
    model = dsfd.DSFD(width=0.0625, dtype=dtype)
    schedule, tx = optim.build(SGD, STEPS)

    def init(key):
        return model.init(key, jnp.zeros((1, S, S, 3), jnp.float32))

    return model, schedule, {detector_step.NETWORK: state_lib.Spec(init, tx)}


@pytest.fixture(scope='module')
def initial_state():
    _, _, specs = _setup()
    return state_lib.create(specs, jax.random.key(0), sharding.make_mesh(8))


def _run(num_devices: int, state0) -> list[dict]:
    mesh = sharding.make_mesh(num_devices)
    model, schedule, _ = _setup()
    state = jax.device_put(jax.tree.map(jnp.copy, state0), sharding.replicated(mesh))
    step = detector_step.make_train_step(model, schedule, mesh, image_size=S)
    rng = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    out = []
    for i in range(STEPS):
        state, metrics = step(state, detector_step.shard_batch(_batch(i), mesh), rng)
        out.append(jax.device_get(metrics))
    assert int(state.step) == STEPS
    return out


@pytest.fixture(scope='module')
def one_device(initial_state):
    return _run(1, initial_state)


def test_same_losses_on_1_and_8_devices(one_device, initial_state):
    assert len(jax.devices()) == 8
    eight = _run(8, initial_state)
    for a, b in zip(one_device, eight, strict=True):
        for k in ('loc1', 'conf1', 'loc2', 'conf2', 'loss', 'lr'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)
        # A norm over ~100k gradient entries: the cross-device summation order shows.
        np.testing.assert_allclose(a['grad_norm'], b['grad_norm'], rtol=1e-3)


def test_metrics_and_loss_terms(one_device):
    m = one_device[0]
    assert set(m) == {'loc1', 'conf1', 'loc2', 'conf2', 'loss', 'lr', 'grad_norm'}
    np.testing.assert_allclose(
        m['loss'], m['loc1'] + m['conf1'] + m['loc2'] + m['conf2'], rtol=1e-6
    )
    assert all(np.isfinite(v) for v in m.values())
    assert one_device[-1]['loss'] != m['loss']  # Parameters moved.


def test_bf16_compute_traces_with_float32_params_and_metrics():
    model, schedule, specs = _setup(jnp.bfloat16)
    mesh = sharding.make_mesh(1)
    state = state_lib.abstract(specs, mesh)
    step = detector_step.make_train_step(model, schedule, mesh, image_size=S)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in _batch(0).items()}
    new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state.nets['detector'].params))
    assert metrics['loss'].dtype == jnp.float32


def test_lr_schedule_scales_decay_points():
    sched = optim.lr_schedule(2.5e-4, 60_000)
    assert float(sched(39_999)) == pytest.approx(2.5e-4)
    assert float(sched(40_000)) == pytest.approx(2.5e-5)
    assert float(sched(50_000)) == pytest.approx(2.5e-6)
    short = optim.lr_schedule(2.5e-4, 7_500)
    assert float(short(4_999)) == pytest.approx(2.5e-4)
    assert float(short(5_000)) == pytest.approx(2.5e-5)
    assert float(short(6_250)) == pytest.approx(2.5e-6)


def test_optimizer_is_sgd_momentum_with_coupled_weight_decay():
    _, tx = optim.build({'name': 'sgd', 'lr': 0.1, 'momentum': 0.9, 'weight_decay': 0.5}, 10)
    p = {'w': jnp.array([2.0])}
    s = tx.init(p)
    g = {'w': jnp.array([1.0])}
    u1, s = tx.update(g, s, p)
    np.testing.assert_allclose(u1['w'], [-0.1 * (1.0 + 0.5 * 2.0)])  # d = g + wd * p
    u2, _ = tx.update(g, s, p)
    np.testing.assert_allclose(u2['w'], [-0.1 * (2.0 + 0.9 * 2.0)])  # buf = .9 buf + d


def test_warmup_ramps_linearly_then_follows_the_step_decay():
    sched = optim.lr_schedule(1e-3, 500, (0.8, 0.95), warmup_steps=20)
    assert float(sched(0)) == pytest.approx(1e-3 / 20)
    assert float(sched(9)) == pytest.approx(1e-3 / 2)
    assert float(sched(19)) == pytest.approx(1e-3)
    assert float(sched(399)) == pytest.approx(1e-3)
    assert float(sched(400)) == pytest.approx(1e-4)
    assert float(sched(475)) == pytest.approx(1e-5)


def test_clipping_and_adam_options():
    g = {'w': jnp.array([30.0, 40.0])}  # Norm 50.
    p = {'w': jnp.array([0.0, 0.0])}
    _, sgd = optim.build({'name': 'sgd', 'lr': 1.0, 'momentum': 0.0, 'clip_norm': 5.0}, 10)
    u, _ = sgd.update(g, sgd.init(p), p)
    np.testing.assert_allclose(u['w'], [-3.0, -4.0], rtol=1e-6)
    _, adam = optim.build({'name': 'adam', 'lr': 0.1}, 10)
    u, _ = adam.update(g, adam.init(p), p)
    np.testing.assert_allclose(u['w'], [-0.1, -0.1], rtol=1e-5)  # First Adam step: lr * sign.
    with pytest.raises(ValueError, match='unknown optimizer'):
        optim.build({'name': 'lamb'}, 10)
    with pytest.raises(ValueError, match=r"unknown optimiser keys \['betas'\]"):
        optim.build({'name': 'adam', 'betas': (0.5, 0.9)}, 10)
    _, adam = optim.build({'name': 'adam', 'lr': 0.1, 'b1': 0.5, 'b2': 0.9}, 10)
    s = adam.init(p)
    _, s = adam.update(g, s, p)
    mu = s[-1][0].mu['w']  # The chain's Adam state: first moment (1 - b1) * g.
    np.testing.assert_allclose(mu, [15.0, 20.0], rtol=1e-6)


def test_optimizer_from_config_follows_the_smoke_config():
    from configs import dsfd_original

    smoke = dsfd_original.get_config('smoke')
    cfg = smoke.optim.detector
    schedule, tx = optim.build(cfg, smoke.train.steps)
    assert float(schedule(0)) == pytest.approx(cfg.lr / cfg.warmup_steps)
    assert float(schedule(smoke.train.steps - 1)) == pytest.approx(cfg.lr / 100)
    p = {'w': jnp.zeros(2)}
    g = {'w': jnp.array([3e8, -4e8])}  # Like the first gradients of the un-normalised VGG.
    u, _ = tx.update(g, tx.init(p), p)  # Adam's first step: lr(0) * sign(g).
    np.testing.assert_allclose(
        u['w'], [-cfg.lr / cfg.warmup_steps, cfg.lr / cfg.warmup_steps], rtol=1e-4
    )
    paper = dsfd_original.get_config()
    schedule, tx = optim.build(paper.optim.detector, paper.train.steps)
    assert float(schedule(0)) == pytest.approx(2.5e-4)
    u, _ = tx.update({'w': jnp.array([2.0, 0.0])}, tx.init(p), p)  # Plain SGD, no clipping.
    np.testing.assert_allclose(u['w'], [-5e-4, 0.0], rtol=1e-5)


def test_preprocess_subtracts_rgb_mean():
    img = jnp.full((1, 2, 2, 3), 200, jnp.uint8)
    out = dsfd.preprocess(img)
    np.testing.assert_allclose(out[0, 0, 0], [77, 83, 96])
    assert out.dtype == jnp.float32


def test_anchors_match_model_outputs():
    first, second = anchors.shot_anchors(S)
    model = dsfd.DSFD(width=0.0625)
    out = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((1, S, S, 3)))[0]
    assert first.shape[0] == second.shape[0] == out['loc1'].shape[1]
    np.testing.assert_allclose(first[:, 2:] * 2, second[:, 2:])
