"""CIAGAN's networks: sizes, the PyTorch mapping and every layer against a numpy forward pass."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.models import ciagan, gan_layers, siamese_resnet, torch_import

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tools'))
import convert_torch_weights  # noqa: E402


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(module, *shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.eval_shape(module.init, jax.random.key(0), *args)


def test_paper_sizes():
    r = (1, 128, 128, 3)
    g = _shapes(ciagan.Generator(), r, r, (1, 1200))
    assert _count(g['params']) == 11_801_123
    assert _count(_shapes(ciagan.Discriminator(), r, r)['params']) == 18_233_409
    assert _count(_shapes(siamese_resnet.SiameseResNet(), r)['params']) == 12_924_144
    keys = ciagan.torch_key_shapes()
    assert len(keys) == 248
    assert keys['conv0.conv_r1.conv2d.weight_orig'] == (32, 6, 3, 3)
    assert keys['conv0.conv_r1.conv2d.weight_v'] == (54,)
    assert keys['conv0.conv_r1.conv2d.weight_u'] == (32,)
    assert keys['encode_one_hot.0.weight'] == (256, 1200)
    assert keys['encode_noise.8.weight'] == (256,)
    assert keys['conv_end.0.weight'] == (3, 16, 3, 3)
    assert sum(k.endswith('weight_orig') for k in keys) == 42  # Every conv but conv_end.


# ----------------------------------------------------------------- numpy reference (NCHW)


def _conv(x, w, b, pad, mode='reflect'):
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    o, _, k, _ = w.shape
    n, c, h, wd = x.shape
    ho, wo = h - k + 1, wd - k + 1
    cols = np.stack([x[:, :, i : i + ho, j : j + wo] for i in range(k) for j in range(k)], 2)
    cols = cols.reshape(n, c * k * k, ho, wo)  # (c, i, j): the order of w.reshape(O, -1).
    return np.einsum('ok,nkhw->nohw', w.reshape(o, -1), cols) + b[None, :, None, None]


def _sn(sd, p, x):
    w, u, v = (sd[f'{p}.conv2d.weight_{s}'] for s in ('orig', 'u', 'v'))
    sigma = u @ (w.reshape(len(w), -1) @ v)  # The stored u and v, as they are.
    return _conv(x, w / sigma, sd[f'{p}.conv2d.bias'], w.shape[2] // 2)


def _in(sd, p, x):
    m, var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    return (x - m) / np.sqrt(var + 1e-5) * sd[f'{p}.weight'][:, None, None] + sd[f'{p}.bias'][
        :, None, None
    ]


def _pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))


def _up(x):
    return x.repeat(2, 2).repeat(2, 3)


def _relu(x):
    return np.maximum(x, 0)


def _lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def _numpy_generator(sd, x, onehot, enc, dec):
    for j in enc:
        p = f'conv{j}'
        out = _sn(sd, f'{p}.conv_r2', _relu(_sn(sd, f'{p}.conv_r1', _relu(x))))
        x = _in(sd, f'in{j}_e', _pool(out) + _pool(_sn(sd, f'{p}.conv_l', x)))
    code = onehot
    for i in range(0, 14, 2):
        code = _lrelu(code @ sd[f'encode_one_hot.{i}.weight'].T + sd[f'encode_one_hot.{i}.bias'])
    code = code.reshape(-1, 32, 4, 4)
    for i in (0, 3, 6):
        code = _in(sd, f'encode_noise.{i + 2}', _lrelu(_sn(sd, f'encode_noise.{i}', code)))
    x = _in(sd, 'embed.1', _sn(sd, 'embed.0', np.concatenate([x, code], 1)))
    for i in range(1, 5):
        out = _relu(_in(sd, f'res{i}.in1', _sn(sd, f'res{i}.conv1', x)))
        x = _in(sd, f'res{i}.in2', _sn(sd, f'res{i}.conv2', out)) + x
    for j in dec:
        p = f'deconv{j}'
        out = _sn(sd, f'{p}.conv_r1', _up(_relu(_in(sd, f'{p}.norm_r1', x))))
        out = _sn(sd, f'{p}.conv_r2', _relu(_in(sd, f'{p}.norm_r2', out)))
        x = _in(sd, f'in{j}_d', out + _sn(sd, f'{p}.conv_l', _up(x)))
    return _conv(x, sd['conv_end.0.weight'], sd['conv_end.0.bias'], 1, mode='constant')


def _random_state_dict(num_classes, resolution, width, seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in ciagan.torch_key_shapes(num_classes, resolution, width).items():
        scale = 0.3 if key.endswith(('weight_orig', '.weight')) and len(shape) > 1 else 1.0
        value = rng.normal(0, scale, shape)
        if key.endswith('.weight') and len(shape) == 1:  # InstanceNorm scale, near 1.
            value = 1.0 + 0.1 * value
        sd[key] = value.astype(np.float32)
    return sd


@pytest.mark.parametrize('resolution', [16, 32])
def test_generator_equals_numpy_forward_of_the_torch_state_dict(resolution):
    nc, width = 5, 0.125
    sd = _random_state_dict(nc, resolution, width)
    variables = ciagan.params_from_torch_state_dict(sd, nc, resolution, width)
    rng = np.random.default_rng(1)
    lndm = rng.uniform(0, 1, (2, resolution, resolution, 3)).astype(np.float32)
    masked = rng.uniform(0, 1, (2, resolution, resolution, 3)).astype(np.float32)
    onehot = np.eye(nc, dtype=np.float32)[[1, 3]]
    model = ciagan.Generator(num_classes=nc, resolution=resolution, width=width)
    y = np.asarray(model.apply(variables, lndm, masked, onehot))
    levels = ciagan.levels(resolution)
    x = np.concatenate([lndm, masked], -1).transpose(0, 3, 1, 2).astype(np.float64)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    ref = _numpy_generator(sd64, x, onehot, range(5 - levels, 5), range(4, 4 - levels, -1))
    assert y.shape == (2, resolution, resolution, 3)
    np.testing.assert_allclose(y, ref.transpose(0, 2, 3, 1), rtol=2e-4, atol=2e-4)
    # Evaluation leaves the stored spectral-norm vectors alone.
    _, updates = model.apply(variables, lndm, masked, onehot, mutable=['batch_stats'])
    for a, b in zip(
        jax.tree.leaves(updates), jax.tree.leaves(variables['batch_stats']), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_state_dict_round_trip_and_errors():
    nc, r, w = 4, 16, 0.125
    sd = _random_state_dict(nc, r, w)
    variables = ciagan.params_from_torch_state_dict(sd, nc, r, w)
    back = ciagan.params_to_torch_state_dict(variables, nc, r, w)
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    module = {f'module.{k}': v for k, v in sd.items()}  # DataParallel prefix.
    assert jax.tree.all(
        jax.tree.map(
            np.array_equal, ciagan.params_from_torch_state_dict(module, nc, r, w), variables
        )
    )
    bad = dict(sd)
    del bad['embed.1.bias']
    with pytest.raises(ValueError, match='missing embed.1.bias'):
        ciagan.params_from_torch_state_dict(bad, nc, r, w)
    bad = dict(sd, extra=np.zeros(1))
    with pytest.raises(ValueError, match='unexpected extra'):
        ciagan.params_from_torch_state_dict(bad, nc, r, w)
    bad = dict(sd)
    bad['conv_end.0.weight'] = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match='conv_end.0.weight: shape'):
        ciagan.params_from_torch_state_dict(bad, nc, r, w)
    bad = dict(sd)
    bad['res1.in1.weight'] = np.full_like(sd['res1.in1.weight'], np.nan)
    with pytest.raises(ValueError, match='NaN'):
        ciagan.params_from_torch_state_dict(bad, nc, r, w)


def test_sn_conv_power_iteration_matches_pytorch_semantics():
    layer = gan_layers.SNConv(4, 3)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    variables = layer.init(jax.random.key(0), x)
    kernel = np.asarray(variables['params']['kernel'], np.float64)
    u = np.asarray(variables['batch_stats']['u'], np.float64)
    assert np.isclose(np.linalg.norm(u), 1.0, atol=1e-5)
    w = kernel.transpose(3, 2, 0, 1).reshape(4, -1)
    v1 = w.T @ u / np.linalg.norm(w.T @ u)
    u1 = w @ v1 / np.linalg.norm(w @ v1)
    y, updates = layer.apply(variables, x, True, mutable=['batch_stats'])
    np.testing.assert_allclose(updates['batch_stats']['u'], u1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates['batch_stats']['v'], v1, rtol=1e-5, atol=1e-6)
    sigma = u1 @ w @ v1
    ref = _conv(
        x.transpose(0, 3, 1, 2).astype(np.float64),
        w.reshape(4, 3, 3, 3) / sigma,
        np.asarray(variables['params']['bias'], np.float64),
        1,
    )
    np.testing.assert_allclose(y, ref.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    # The bias starts at 0.01 and the kernel is Xavier-normal (CIAGAN's weights_init).
    np.testing.assert_allclose(variables['params']['bias'], 0.01)


def test_discriminator_and_identity_network_run():
    r = 16
    x = np.random.default_rng(0).uniform(size=(2, r, r, 3)).astype(np.float32)
    d = ciagan.Discriminator(resolution=r, width=0.125)
    dv = d.init(jax.random.key(0), x, x)
    score = d.apply(dv, x, x)
    assert score.shape == (2, 1) and np.all(np.isfinite(score))
    net = siamese_resnet.SiameseResNet(num_classes=6, width=0.125)
    sv = net.init(jax.random.key(0), x)
    emb, updates = net.apply(sv, x, train=True, mutable=['batch_stats'])
    assert emb.shape == (2, 6)
    moved = jax.tree.map(
        lambda a, b: bool(np.any(a != b)), updates['batch_stats'], sv['batch_stats']
    )
    assert any(jax.tree.leaves(moved))  # Training updates the running statistics.


def test_contrastive_loss_hand_case():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    b = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    same = jnp.array([1.0, 0.0])
    # Pair 0: 0.5 * d^2 = 1.0; pair 1: 0.5 * (3 - 1)^2 = 2.0.
    np.testing.assert_allclose(siamese_resnet.contrastive_loss(a, b, same), 1.5, rtol=1e-6)


def test_convert_tool_imports_a_ciagan_state_dict(tmp_path, capsys):
    nc, r, w = 7, 32, 0.125
    sd = _random_state_dict(nc, r, w, seed=3)
    src = tmp_path / 'modelG.npz'
    np.savez(src, **sd)
    out = tmp_path / 'ciagan'
    assert (
        convert_torch_weights.main(
            ['--format=ciagan', f'--src={src}', f'--out={out}', f'--width={w}']
        )
        == 0
    )
    assert 'ciagan' in capsys.readouterr().out
    info = torch_import.load_conversion_info(out)
    assert (info['format'], info['num_classes'], info['resolution']) == ('ciagan', nc, r)
    loaded = torch_import.load_converted(out)
    direct = ciagan.params_from_torch_state_dict(sd, nc, r, w)
    assert jax.tree.all(jax.tree.map(np.array_equal, loaded, direct))
    del sd['res2.conv1.conv2d.weight_v']
    np.savez(src, **sd)
    assert (
        convert_torch_weights.main(
            ['--format=ciagan', f'--src={src}', f'--out={tmp_path / "bad"}', f'--width={w}']
        )
        == 2
    )
    assert 'missing res2.conv1.conv2d.weight_v' in capsys.readouterr().err
