"""DeepPrivacy v1 generator / discriminators, the shared GAN layers and the torch mapping.

Full-size models are only traced (`jax.eval_shape`). Forward passes use tiny widths and are
checked against numpy re-implementations written here from the original PyTorch code: the
generator reference walks a DP-v1 state dict (OIHW weights, `[1, O, 1, 1]` biases) by its
module names in the order of DP-v1 `Generator.forward` (commit 3516f6f), in NCHW like torch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.models import deepprivacy as dp
from safefakes_jax.models import gan_layers as gl

SQRT2 = math.sqrt(2.0)
# The 32 convs of the ISVC'19 generator at 128x128: (torch module path, O, I, k).
V1_CONVS = [
    ('from_rgb_new.0', 128, 3, 1),
    ('new_down.0.model.0.0', 256, 128, 3),
    ('new_down.0.model.1.0', 256, 256, 3),
    ('core_blocks_down.0.0.model.0.0', 512, 256, 3),
    ('core_blocks_down.0.0.model.1.0', 512, 512, 3),
    *[(f'core_blocks_down.{i}.1.model.{j}.0', 512, 512, 3) for i in (1, 2, 3) for j in (0, 1)],
    *[(f'core_blocks_down.4.1.{j}.0', 512, 512, 3) for j in (0, 1)],
    ('core_blocks_up.0.0.0.0', 512, 551, 1),
    *[(f'core_blocks_up.0.0.1.model.{j}.0', 512, 512, 3) for j in (0, 1)],
    *[(f'core_blocks_up.{k}.0.0', 512, 1031, 1) for k in (1, 2, 3, 4)],
    *[(f'core_blocks_up.{k}.1.model.{j}.0', 512, 512, 3) for k in (1, 2, 3) for j in (0, 1)],
    ('core_blocks_up.4.1.model.0.0', 256, 512, 3),
    ('core_blocks_up.4.1.model.1.0', 256, 256, 3),
    ('new_up.0.0', 256, 519, 1),
    ('new_up.1.model.0.0', 128, 256, 3),
    ('new_up.1.model.1.0', 128, 128, 3),
    ('to_rgb_new', 3, 128, 1),
]


def _n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _g_args(n, res):
    shapes = ((n, res, res, 3), (n, dp.NUM_KEYPOINTS, 2), (n, *dp.Z_SHAPE))
    return tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)


def _random_state_dict(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def _random_params(model, *args, seed=0):
    """Params of `model` (shapes from `jax.eval_shape`: no init to compile), N(0, 1) kernels
    and 0.05 biases, plus the traced float dtypes."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)['params']
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda path, s: (
            rng.standard_normal(s.shape, dtype=np.float32)
            if path[-1].key == 'kernel'
            else np.full(s.shape, 0.05, np.float32)
        ),
        shapes,
    )
    return params, {x.dtype for x in jax.tree.leaves(shapes)}


def _inputs(n, res, seed=0):
    rng = np.random.default_rng(seed)
    cond = rng.uniform(-1, 1, (n, res, res, 3)).astype(np.float32)
    cond[:, res // 4 : 3 * res // 4, res // 4 : 3 * res // 4] = 0  # Blacked-out box.
    kp = rng.uniform(0, 1, (n, dp.NUM_KEYPOINTS, 2)).astype(np.float32)
    kp[0, 3] = np.nan  # Absent.
    kp[0, 4] = (1.0, 0.5)  # Exactly 1.0: dropped.
    kp[-1, 6] = (-0.1, 0.3)  # Outside.
    z = rng.standard_normal((n, 4, 4, dp.Z_CHANNELS)).astype(np.float32)
    return cond, kp, z


# ------------------------------------------------------------ numpy references (NCHW, f64)


def np_conv(x, w, pad):
    """PyTorch `F.conv2d(x, w, padding=pad)` of NCHW maps with OIHW weights (no bias)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum('nchw,oc->nohw', xp[:, :, i : i + oh, j : j + ow], w[:, :, i, j])
    return out


np_pixel_norm = lambda x: x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-8)
np_lrelu = lambda x: np.where(x >= 0, x, 0.2 * x)
np_up = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)


def np_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def np_pose(pose, r):
    """DP `generate_pose_channel_images` at one size: [N, 2K] (x0, y0, x1, ...) -> NCHW."""
    n, k = pose.shape[0], pose.shape[1] // 2
    out = np.zeros((n, k, r, r))
    for b in range(n):
        for i in range(k):
            x, y = pose[b, 2 * i], pose[b, 2 * i + 1]
            if 0 <= x < 1 and 0 <= y < 1:  # False for NaN.
                out[b, i, int(y * r), int(x * r)] = 1
    return out


def ref_generator(sd, cond, keypoints, z, conv=np_conv):
    """DP-v1 `Generator.forward` at transition value 1, from a DP-v1 state dict (NHWC io)."""
    res = cond.shape[1]
    steps = int(math.log2(res // 4))
    assert steps >= 2

    def ws(p, x):  # DP-v1 WSConv2d: conv(x * gain / sqrt(fan_in)) + bias.
        w, b = sd[f'{p}.conv.weight'], sd[f'{p}.bias'].astype(np.float64)
        return conv(x * (SQRT2 / math.sqrt(np.prod(w.shape[1:]))), w, w.shape[-1] // 2) + b

    def cbr(p, x):
        return np_pixel_norm(np_lrelu(ws(p, x)))

    def unet(p, x):
        return cbr(f'{p}.model.1.0', cbr(f'{p}.model.0.0', x))

    pose = keypoints.reshape(keypoints.shape[0], -1).astype(np.float64)
    poses = [np_pose(pose, 4 << i) for i in range(steps + 1)]
    x = cbr('from_rgb_new.0', np.transpose(cond, (0, 3, 1, 2)).astype(np.float64))
    x = unet('new_down.0', x)
    skips = [x]
    x = np_pool(x)
    for i in range(steps - 1):  # core_blocks_down[:-1]
        x = (
            unet('core_blocks_down.0.0', x)
            if i == 0
            else unet(f'core_blocks_down.{i}.1', np_pool(x))
        )
        skips.append(x)
    last = f'core_blocks_down.{steps - 1}.1'  # Sequential(AvgPool2d, model)
    x = cbr(f'{last}.1.0', cbr(f'{last}.0.0', np_pool(x)))
    x = np.concatenate([x, poses[0], np.transpose(z, (0, 3, 1, 2))], axis=1)
    x = np_up(unet('core_blocks_up.0.0.1', cbr('core_blocks_up.0.0.0.0', x)))
    for idx in range(steps - 1):  # core_blocks_up[1:]
        x = np.concatenate([x, skips[-idx - 1], poses[idx + 1]], axis=1)
        k = idx + 1
        x = np_up(unet(f'core_blocks_up.{k}.1', cbr(f'core_blocks_up.{k}.0.0', x)))
    x = np.concatenate([x, skips[0], poses[-1]], axis=1)
    x = unet('new_up.1', cbr('new_up.0.0', x))
    return np.transpose(ws('to_rgb_new', x), (0, 2, 3, 1))


# ------------------------------------------------------------------------ parameter counts


def test_parameter_counts_full_size():
    g = jax.eval_shape(dp.Generator().init, jax.random.key(0), *_g_args(1, 128))
    assert _n_params(g['params']) == 46_924_931
    img = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    kp = jax.ShapeDtypeStruct((1, 7, 2), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 128, 128, 1), jnp.float32)
    d1 = jax.eval_shape(dp.Discriminator('v1').init, jax.random.key(0), img, img, kp)
    assert _n_params(d1['params']) == 45_526_361
    d2 = jax.eval_shape(dp.Discriminator('v2').init, jax.random.key(0), img, img, kp, mask)
    # torch counts 47,150,530: + the unused `output_layer.linear` (728 + 1) of layers.Linear.
    assert _n_params(d2['params']) == 47_150_530 - 729 == 47_149_801
    assert d1['params']['from_rgb']['kernel'].shape == (1, 1, 6, 176)
    assert d2['params']['from_rgb']['kernel'].shape == (1, 1, 7, 184)
    assert d2['params']['b64_0']['kernel'].shape == (3, 3, 375, 375)
    assert d2['params']['b4_1']['kernel'].shape == (4, 4, 735, 728)
    assert d1['params']['b4_1']['kernel'].shape == (4, 4, 720, 720)
    assert d1['params']['b128_1']['kernel'].shape == (3, 3, 176, 360)


# ----------------------------------------------------------------------------- torch keys


def test_torch_key_table_is_the_v1_checkpoint_layout():
    want = {}
    for p, o, i, k in V1_CONVS:
        want[f'{p}.conv.weight'] = (o, i, k, k)
        want[f'{p}.bias'] = (1, o, 1, 1)
    shapes = dp.torch_key_shapes()
    assert len(shapes) == 64
    assert shapes == want
    assert sum(int(np.prod(s)) for s in shapes.values()) == 46_924_931
    v2 = dp.torch_key_shapes(naming='v2')
    assert len(v2) == 64
    assert v2['decoder.skip_connection5.conv.layers.0.weight'] == (256, 519, 1, 1)
    assert v2['encoder.basic_block5.layers.3.bias'] == (256,)


@pytest.mark.parametrize('naming', ['v1', 'v2'])
def test_round_trip_is_bit_exact(naming):
    shapes = dp.torch_key_shapes(naming=naming)
    sd = _random_state_dict(shapes)
    params = dp.params_from_torch_state_dict(sd)
    assert params['dec128_1x1']['kernel'].shape == (1, 1, 519, 256)
    assert params['enc128_0']['bias'].shape == (256,)
    back = dp.params_to_torch_state_dict(params, naming=naming)
    assert list(back) == list(shapes)
    for k, v in sd.items():
        assert back[k].dtype == np.float32 and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


def test_bad_state_dicts_are_refused_with_the_key_named():
    sd = _random_state_dict(dp.torch_key_shapes(0.0625, 32), seed=1)
    dp.params_from_torch_state_dict(sd, 0.0625, 32)  # Fits.
    missing = dict(sd)
    del missing['new_up.0.0.bias']
    with pytest.raises(ValueError, match=r'missing keys \(1\): new_up\.0\.0\.bias'):
        dp.params_from_torch_state_dict(missing, 0.0625, 32)
    with pytest.raises(ValueError, match=r'unexpected keys \(1\): bogus\.weight'):
        dp.params_from_torch_state_dict({**sd, 'bogus.weight': np.zeros(1)}, 0.0625, 32)
    bad = {**sd, 'to_rgb_new.conv.weight': np.zeros((3, 31, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r'shape mismatches \(1\): to_rgb_new\.conv\.weight'):
        dp.params_from_torch_state_dict(bad, 0.0625, 32)
    with pytest.raises(ValueError, match='missing keys'):  # A full-size dict for a tiny model.
        dp.params_from_torch_state_dict(sd)
    # The faded-out 64x64 branch of a real checkpoint is accepted and ignored.
    old = {k: np.zeros(1, np.float32) for k in dp.V1_FADED_OUT_KEYS}
    params = dp.params_from_torch_state_dict({**sd, **old}, 0.0625, 32)
    assert set(params) == set(dp.params_from_torch_state_dict(sd, 0.0625, 32))


def test_state_dict_from_checkpoint():
    sd = {'a.bias': np.ones((1, 2, 1, 1), np.float32)}
    wrapped = {'transition_step': 5, 'transition_value': 1.0, 'parameters': sd}
    got = dp.state_dict_from_checkpoint({'running_average_generator': wrapped, 'D': {}})
    np.testing.assert_array_equal(got['a.bias'], sd['a.bias'])
    assert dp.state_dict_from_checkpoint(sd).keys() == sd.keys()
    with pytest.raises(ValueError, match='fade-in'):
        dp.state_dict_from_checkpoint({**wrapped, 'transition_value': 0.5})


# --------------------------------------------------------------------------------- layers


@pytest.mark.parametrize('k', [3, 1, 4])
def test_wsconv_matches_numpy(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 6, 7, 5)).astype(np.float32)
    pad = 0 if k == 4 else None
    layer = gl.WSConv(4, k, pad)
    params = layer.init(jax.random.key(0), x)['params']
    assert params['kernel'].shape == (k, k, 5, 4) and not np.any(params['bias'])
    w = rng.standard_normal((4, 5, k, k)).astype(np.float32)  # OIHW
    b = rng.standard_normal(4).astype(np.float32)
    p = {'kernel': np.transpose(w, (2, 3, 1, 0)), 'bias': b}
    got = layer.apply({'params': p}, x)
    nchw = np.transpose(x, (0, 3, 1, 2))
    want = np_conv(nchw, w * SQRT2 / math.sqrt(5 * k * k), 0 if k == 4 else k // 2)
    want = np.transpose(want, (0, 2, 3, 1)) + b
    assert got.shape == want.shape == ((2, 3, 4, 4) if k == 4 else (2, 6, 7, 4))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_wslinear_pixel_norm_pool_and_up_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    w = rng.standard_normal((10, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    for gain in (SQRT2, 1.0):
        got = gl.WSLinear(2, gain=gain).apply({'params': {'kernel': w, 'bias': b}}, x)
        np.testing.assert_allclose(got, x @ w * gain / math.sqrt(10) + b, rtol=1e-5, atol=1e-6)
    m = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    want = m / np.sqrt(np.mean(m.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(gl.pixel_norm(m), want, rtol=1e-6)
    assert np.all(np.asarray(gl.pixel_norm(np.zeros((1, 2, 2, 3), np.float32))) == 0)
    nchw = np.transpose(m, (0, 3, 1, 2))
    np.testing.assert_allclose(gl.avg_pool(m), np.transpose(np_pool(nchw), (0, 2, 3, 1)), rtol=1e-6)
    np.testing.assert_array_equal(gl.upsample_nearest(m), np.transpose(np_up(nchw), (0, 2, 3, 1)))


def test_keypoint_maps_hand_cases():
    nan = np.nan
    kp = np.array(
        [
            [
                [0.1, 0.2],
                [0.6, 0.9],
                [nan, 0.5],
                [-0.01, 0.5],
                [0.5, 1.0],
                [1.0, 0.5],
                [0.999, 0.5],
            ],
            [[0.0, 0.0], [0.1, 0.2], [0.5, nan], [0.5, -1e-6], [1.5, 0.5], [0.3, 0.3], [0.3, 0.3]],
        ],
        np.float32,
    )
    m = np.asarray(gl.keypoint_maps(kp, 8))
    assert m.shape == (2, 8, 8, 7) and m.dtype == np.float32
    want = np.zeros((2, 8, 8, 7), np.float32)
    want[0, 1, 0, 0] = 1  # (x, y) = (0.1, 0.2) -> row floor(1.6) = 1, column floor(0.8) = 0.
    want[0, 7, 4, 1] = 1  # (0.6, 0.9) -> row 7, column 4.
    want[0, 4, 7, 6] = 1  # x = 0.999 -> the last column.
    want[1, 0, 0, 0] = 1
    want[1, 1, 0, 1] = 1
    want[1, 2, 2, 5] = want[1, 2, 2, 6] = 1  # Two keypoints in one cell, two channels.
    np.testing.assert_array_equal(m, want)
    np.testing.assert_array_equal(m[0, :, :, 2:6], 0)  # NaN, negative, y = 1.0, x = 1.0.
    m4 = np.asarray(gl.keypoint_maps(kp, 4, jnp.bfloat16).astype(jnp.float32))
    assert m4[0, 2, 3, 6] == 1 and m4.sum() == 7
    for r in (4, 16, 128):
        np.testing.assert_array_equal(
            gl.keypoint_maps(kp, r), np.transpose(np_pose(kp.reshape(2, -1), r), (0, 2, 3, 1))
        )


# ------------------------------------------------------------------------ full forwards


def _tiny_generator(width=1 / 32, res=64, naming='v1', seed=0):
    model = dp.Generator(width=width, resolution=res)
    sd = _random_state_dict(dp.torch_key_shapes(width, res, naming), seed)
    # Non-zero biases (checkpoint-like); scaled down so activations stay O(1).
    sd = {k: v * 0.1 if k.endswith('bias') else v for k, v in sd.items()}
    return model, sd


def test_tiny_generator_matches_numpy_reference_of_dp_v1():
    model, sd = _tiny_generator()  # c = 16 up to 32x32, 8 at 64x64: every channel rule used.
    params = dp.params_from_torch_state_dict(sd, 1 / 32, 64)
    cond, kp, z = _inputs(2, 64)
    got = np.asarray(jax.jit(model.apply)({'params': params}, cond, kp, z))
    want = ref_generator(sd, cond, kp, z)
    assert got.shape == (2, 64, 64, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    # z and the keypoints both matter (their concat positions are checked above).
    no_z = jax.jit(model.apply)({'params': params}, cond, kp, 0 * z)
    assert not np.allclose(no_z, got, atol=1e-3)


@pytest.mark.slow
def test_full_size_generator_matches_numpy_reference_of_dp_v1():
    """The 128x128 net from a 64-key DP-v1 state dict (about a minute on 2 cores)."""
    sd = _random_state_dict(dp.torch_key_shapes(), seed=7)
    sd = {k: v * 0.1 if k.endswith('bias') else v for k, v in sd.items()}
    cond, kp, z = _inputs(1, 128, seed=7)
    params = dp.params_from_torch_state_dict(sd)
    got = jax.jit(dp.Generator().apply)({'params': params}, cond, kp, z)
    np.testing.assert_allclose(got, ref_generator(sd, cond, kp, z), rtol=1e-4, atol=1e-4)


def test_tiny_generator_matches_torch_when_available():
    torch = pytest.importorskip('torch')

    def torch_conv(x, w, pad):
        y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=pad)
        return y.numpy()

    model, sd = _tiny_generator(seed=3)
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    cond, kp, z = _inputs(2, 64, seed=3)
    params = dp.params_from_torch_state_dict(sd, 1 / 32, 64)
    got = jax.jit(model.apply)({'params': params}, cond, kp, z)
    want = ref_generator(sd64, cond, kp, z, conv=torch_conv)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


def test_v2_names_give_the_same_network():
    model, sd1 = _tiny_generator(res=32)
    p1 = dp.params_from_torch_state_dict(sd1, 1 / 32, 32)
    sd2 = dp.params_to_torch_state_dict(p1, naming='v2')
    assert sd2['decoder.conv1x1.conv.0.bias'].shape == (16,)
    p2 = dp.params_from_torch_state_dict(sd2, 1 / 32, 32)  # 'auto' detects v2 names.
    cond, kp, z = _inputs(1, 32)
    np.testing.assert_array_equal(
        jax.jit(model.apply)({'params': p1}, cond, kp, z),
        jax.jit(model.apply)({'params': p2}, cond, kp, z),
    )


def test_generator_input_checks():
    model = dp.Generator(width=1 / 32, resolution=16)
    cond, kp, z = _inputs(1, 16)
    params, _ = _random_params(model, cond, kp, z)
    with pytest.raises(ValueError, match='z must have shape'):
        model.apply({'params': params}, cond, kp, np.zeros((1, 32, 4, 4), np.float32))
    with pytest.raises(ValueError, match='keypoints must have shape'):
        model.apply({'params': params}, cond, kp[:, :5], z)
    with pytest.raises(ValueError, match='power of two'):
        dp.Generator(resolution=48).init(jax.random.key(0), *_inputs(1, 48))


def test_bf16_compute_keeps_float32_params():
    model = dp.Generator(width=1 / 32, resolution=32, dtype=jnp.bfloat16)
    cond, kp, z = _inputs(2, 32)
    params, dtypes = _random_params(model, cond, kp, z)
    assert dtypes == {jnp.dtype(jnp.float32)}
    out = jax.jit(model.apply)({'params': params}, cond, kp, z)
    ref_model = dp.Generator(width=1 / 32, resolution=32)
    ref = jax.jit(ref_model.apply)({'params': params}, cond, kp, z)
    assert out.dtype == jnp.float32 and out.shape == (2, 32, 32, 3)
    assert np.all(np.isfinite(out))
    assert float(jnp.mean(jnp.abs(out - ref))) < 0.1 * float(jnp.mean(jnp.abs(ref)))
    d = dp.Discriminator('v2', width=1 / 32, resolution=32, dtype=jnp.bfloat16)
    mask = np.ones((2, 32, 32), np.float32)
    dv, dtypes = _random_params(d, cond, cond, kp, mask)
    assert dtypes == {jnp.dtype(jnp.float32)}
    s = jax.jit(d.apply)({'params': dv}, cond, cond, kp, mask)
    assert s.dtype == jnp.float32 and np.all(np.isfinite(s))


def ref_discriminator(p, image, cond, kp, mask, variant):
    """DP-v1 `Discriminator.forward` / DP-v2 `original.py` at transition value 1 (NCHW)."""
    gain = SQRT2 if variant == 'v1' else 1.0
    pose = kp.reshape(kp.shape[0], -1).astype(np.float64)

    def conv(name, x, pad=None):
        w = np.transpose(p[name]['kernel'], (3, 2, 0, 1))
        y = np_conv(
            x * gain / math.sqrt(np.prod(w.shape[1:])), w, w.shape[-1] // 2 if pad is None else pad
        )
        return np_lrelu(y + p[name]['bias'][None, :, None, None])

    ins = [image, cond] + ([mask[..., None]] if variant == 'v2' else [])
    x = conv('from_rgb', np.transpose(np.concatenate(ins, -1), (0, 3, 1, 2)).astype(np.float64))
    r = image.shape[1]
    while r > 4:
        x = np.concatenate([x, np_pose(pose, r)], axis=1)
        x = np_pool(conv(f'b{r}_1', conv(f'b{r}_0', x)))
        r //= 2
    x = conv('b4_1', conv('b4_0', np.concatenate([x, np_pose(pose, 4)], axis=1)), pad=0)
    w, b = p['output']['kernel'], p['output']['bias']
    return x.reshape(x.shape[0], -1) @ w * gain / math.sqrt(w.shape[0]) + b


@pytest.mark.parametrize('variant', ['v1', 'v2'])
def test_tiny_discriminator_matches_numpy_reference(variant):
    d = dp.Discriminator(variant, width=1 / 16, resolution=32)
    cond, kp, _ = _inputs(2, 32, seed=5)
    image = np.random.default_rng(6).uniform(-1, 1, cond.shape).astype(np.float32)
    mask = np.ones((2, 32, 32), np.float32)
    mask[:, 8:24, 8:24] = 0  # DP-v2: 0 inside the box.
    params, _ = _random_params(d, image, cond, kp, mask)
    got = jax.jit(d.apply)({'params': params}, image, cond, kp, mask)
    assert got.shape == (2, 1) and got.dtype == jnp.float32
    np.testing.assert_allclose(
        got, ref_discriminator(params, image, cond, kp, mask, variant), rtol=2e-4, atol=2e-4
    )
    if variant == 'v2':
        with pytest.raises(ValueError, match='needs the mask'):
            d.apply({'params': params}, image, cond, kp)
