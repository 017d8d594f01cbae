"""DSFD (VGG16) model: parameter budget, shapes, top-down / FEM / L2Norm and the torch mapping.

The full-size model is only traced (`jax.eval_shape`); forward passes use width 0.125 on a
128x180 input (odd of1 width, so the ceil-mode pool matters) with weights mapped from a random
PyTorch-layout state dict, and are checked against numpy re-implementations of the layers.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.models import dsfd, vgg

SMALL = 0.125
H, W = 128, 180
# of1..of6 map sizes of a 128x180 input (of1 = 180 / 4 = 45 is odd -> ceil pool gives 23).
SMALL_SIZES = [(32, 45), (16, 23), (8, 11), (4, 5), (2, 3), (1, 2)]


def _n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope='module')
def full_shapes():
    model = dsfd.DSFD()
    images = jax.ShapeDtypeStruct((1, 640, 640, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return model, variables


# ------------------------------------------------------------------------ numpy references


def np_conv(x, w, b, stride=1, pad=None, dilation=1):
    """Cross-correlation of [B, H, W, I] maps with OIHW weights (PyTorch `nn.Conv2d`)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    kh, kw = w.shape[2:]
    pad = dilation * (kh // 2) if pad is None else pad
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh = (xp.shape[1] - dilation * (kh - 1) - 1) // stride + 1
    ow = (xp.shape[2] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[0])) + b
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation, j * dilation
            patch = xp[:, y0 : y0 + stride * oh : stride, x0 : x0 + stride * ow : stride]
            out += np.einsum('bhwi,oi->bhwo', patch, w[:, :, i, j])
    return out


def np_maxpool(x, ceil_mode=False):
    """PyTorch `nn.MaxPool2d(2, 2, ceil_mode)` on [B, H, W, C]."""
    x = np.asarray(x)
    if ceil_mode:
        ph, pw = x.shape[1] % 2, x.shape[2] % 2
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
    h, w = x.shape[1] // 2, x.shape[2] // 2
    x = x[:, : 2 * h, : 2 * w].reshape(x.shape[0], h, 2, w, 2, -1)
    return x.max(axis=(2, 4))


def np_upsample(x, size):
    """PyTorch `F.interpolate(mode='bilinear', align_corners=False)` on [B, H, W, C]."""
    x = np.asarray(x, np.float64)

    def axis_weights(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, ry = axis_weights(x.shape[1], size[0])
    c0, c1, cx = axis_weights(x.shape[2], size[1])
    ry, cx = ry[None, :, None, None], cx[None, None, :, None]
    top = x[:, r0][:, :, c0] * (1 - cx) + x[:, r0][:, :, c1] * cx
    bot = x[:, r1][:, :, c0] * (1 - cx) + x[:, r1][:, :, c1] * cx
    return top * (1 - ry) + bot * ry


def np_l2norm(x, weight):
    x = np.asarray(x, np.float64)
    return weight * x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-10)


def np_fem(x, sd, prefix):
    relu = lambda a: np.maximum(a, 0)

    def conv(a, name):  # 3x3, dilation 3, pad 3
        return np_conv(a, sd[f'{prefix}.{name}.weight'], sd[f'{prefix}.{name}.bias'], dilation=3)

    b1 = conv(x, 'branch1')
    b2 = conv(relu(conv(x, 'branch2.0')), 'branch2.2')
    b3 = conv(relu(conv(relu(conv(x, 'branch3.0')), 'branch3.2')), 'branch3.4')
    return relu(np.concatenate([b1, b2, b3], axis=-1))


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


# ------------------------------------------------------------------- small forward fixture


def random_state_dict(width, seed=0):
    """Random yx-layout state dict; He-scaled so activations stay O(1) through the net."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in dsfd.torch_key_shapes(width).items():
        if key.startswith('L2Norm'):
            sd[key] = rng.uniform(1.0, 10.0, shape).astype(np.float32)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            sd[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return sd


@pytest.fixture(scope='module')
def small():
    sd = random_state_dict(SMALL)
    params = dsfd.params_from_torch_state_dict(sd, width=SMALL)
    model = dsfd.DSFD(width=SMALL)
    images = np.random.default_rng(1).normal(0, 1, (2, H, W, 3)).astype(np.float32)

    @jax.jit
    def run(params, images):
        return model.apply(
            {'params': params}, images, capture_intermediates=True, mutable=['intermediates']
        )

    out, state = run(params, images)
    inter = jax.tree.map(np.asarray, state['intermediates'])
    return sd, params, images, jax.tree.map(np.asarray, out), inter


def _call(inter, *path):
    node = inter
    for p in path:
        node = node[p]
    return node['__call__'][0]


# ----------------------------------------------------------------------------------- tests


def test_parameter_count_and_budget(full_shapes):
    _, variables = full_shapes
    params = variables['params']
    assert _n_params(params) == 49_793_432
    assert len(jax.tree.leaves(params)) == 186

    def block(prefixes):
        return sum(_n_params(v) for k, v in params.items() if k.startswith(prefixes))

    assert block(('vgg',)) == 20_483_904
    assert block(('extras',)) == 1_803_392
    assert block(('fpn_topdown', 'fpn_latlayer')) == 3_544_832
    assert block(('fpn_fem',)) == 23_626_896
    assert block(('loc_pal', 'conf_pal')) == 331_848
    assert block(('L2Norm',)) == 2_560


def test_anchors_at_640(full_shapes):
    model, variables = full_shapes
    images = jax.ShapeDtypeStruct((2, 640, 640, 3), jnp.float32)
    out = jax.eval_shape(model.apply, variables, images)
    assert dsfd.feature_map_sizes(640, 640) == [(s, s) for s in (160, 80, 40, 20, 10, 5)]
    for shot in (1, 2):
        assert out[f'loc{shot}'].shape == (2, 34_125, 4)
        assert out[f'conf{shot}'].shape == (2, 34_125, 2)
        assert out[f'loc{shot}'].dtype == jnp.float32


def test_bf16_compute_keeps_float32_params_and_outputs():
    model = dsfd.DSFD(width=SMALL, num_classes=3, dtype=jnp.bfloat16)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
    out = jax.eval_shape(model.apply, variables, images)
    assert out['conf2'].shape == (1, 342, 3) and out['conf2'].dtype == jnp.float32


def test_small_forward_shapes(small):
    _, _, _, out, inter = small
    assert dsfd.feature_map_sizes(H, W) == SMALL_SIZES
    a = sum(h * w for h, w in SMALL_SIZES)
    assert a == 1924
    for shot in (1, 2):
        assert out[f'loc{shot}'].shape == (2, a, 4)
        assert out[f'conf{shot}'].shape == (2, a, 2)
        assert np.isfinite(out[f'loc{shot}']).all() and np.isfinite(out[f'conf{shot}']).all()
    for k, (h, w) in enumerate(SMALL_SIZES):
        assert _call(inter, f'loc_pal2_{k}').shape[1:3] == (h, w)
    of = _call(inter, 'vgg')
    assert [f.shape[-1] for f in of] == [32, 64, 64, 128]


def test_max_pool_modes():
    x = np.random.default_rng(0).normal(size=(1, 5, 7, 2)).astype(np.float32)
    close(vgg.max_pool_2x2(jnp.asarray(x)), np_maxpool(x), 0)
    close(vgg.max_pool_2x2(jnp.asarray(x), ceil_mode=True), np_maxpool(x, ceil_mode=True), 0)
    assert vgg.max_pool_2x2(jnp.asarray(x), ceil_mode=True).shape == (1, 3, 4, 2)


def test_backbone_convs_use_mapped_weights(small):
    sd, _, images, _, inter = small
    relu = lambda a: np.maximum(a, 0)
    # Hand-checked conv: the mapped kernel vs a direct correlation with the OIHW weights.
    close(_call(inter, 'vgg', 'conv1_1'), np_conv(images, sd['vgg.0.weight'], sd['vgg.0.bias']))
    # conv6: 3x3, dilation 3, pad 3 on pool5(conv5_3).
    pool5 = np_maxpool(relu(_call(inter, 'vgg', 'conv5_3')))
    conv6 = np_conv(pool5, sd['vgg.31.weight'], sd['vgg.31.bias'], dilation=3)
    close(_call(inter, 'vgg', 'conv6'), conv6)
    # Ceil-mode pool between conv3_3 (of1) and conv4_1.
    of1 = _call(inter, 'vgg')[0]
    close(of1, relu(_call(inter, 'vgg', 'conv3_3')), 0)
    conv4_1 = np_conv(np_maxpool(of1, ceil_mode=True), sd['vgg.17.weight'], sd['vgg.17.bias'])
    close(_call(inter, 'vgg', 'conv4_1'), conv4_1)
    # extras.1: 3x3 stride 2 pad 1.
    ex1 = np_conv(
        relu(_call(inter, 'extras_0')), sd['extras.1.weight'], sd['extras.1.bias'], stride=2, pad=1
    )
    close(_call(inter, 'extras_1'), ex1)


def test_top_down_product(small):
    sd, _, _, _, inter = small
    relu = lambda a: np.maximum(a, 0)
    of1, of2, of3, of4 = _call(inter, 'vgg')
    of5, of6 = relu(_call(inter, 'extras_1')), relu(_call(inter, 'extras_3'))

    def conv1x1(x, key):
        return np_conv(x, sd[f'{key}.weight'], sd[f'{key}.bias'])

    fused = {
        name: inter[name][0] for name in ('conv7', 'conv6', 'convfc7_2', 'conv5', 'conv4', 'conv3')
    }
    close(fused['conv7'], relu(conv1x1(of6, 'fpn_topdown.0')))
    chain = [
        ('conv7', 'conv6', of5),
        ('conv6', 'convfc7_2', of4),
        ('convfc7_2', 'conv5', of3),
        ('conv5', 'conv4', of2),
        ('conv4', 'conv3', of1),
    ]
    for k, (prev, name, raw) in enumerate(chain):
        lateral = conv1x1(raw, f'fpn_latlayer.{k}')  # raw of_j, no ReLU, no L2Norm
        close(_call(inter, f'fpn_latlayer_{k}'), lateral)
        top = relu(conv1x1(fused[prev], f'fpn_topdown.{k + 1}'))
        expected = relu(np_upsample(top, lateral.shape[1:3]) * lateral)
        assert fused[name].shape == lateral.shape
        close(fused[name], expected)


def test_fem_and_l2norm(small):
    sd, _, _, _, inter = small
    for k, name in enumerate(('conv3', 'conv4', 'conv5', 'convfc7_2', 'conv6', 'conv7')):
        fem = _call(inter, f'fpn_fem_{k}')
        close(fem, np_fem(inter[name][0], sd, f'fpn_fem.{k}'))
    for i in range(3):
        fem = _call(inter, f'fpn_fem_{i}')
        close(_call(inter, f'L2Normef{i + 1}'), np_l2norm(fem, sd[f'L2Normef{i + 1}.weight']))
        of = _call(inter, 'vgg')[i]
        close(_call(inter, f'L2Normof{i + 1}'), np_l2norm(of, sd[f'L2Normof{i + 1}.weight']))


def test_heads_flatten_nhwc(small):
    sd, _, _, out, inter = small
    relu = lambda a: np.maximum(a, 0)
    ef1 = _call(inter, 'L2Normef1')
    loc = np_conv(ef1, sd['loc_pal2.0.weight'], sd['loc_pal2.0.bias'])
    close(out['loc2'][:, : 32 * 45], loc.reshape(2, -1, 4))
    of6 = relu(_call(inter, 'extras_3'))
    conf = np_conv(of6, sd['conf_pal1.5.weight'], sd['conf_pal1.5.bias'])
    close(out['conf1'][:, -2:], conf.reshape(2, -1, 2))


def test_fem_channel_splits(full_shapes):
    params = full_shapes[1]['params']
    for k, c in enumerate(dsfd.SOURCE_CHANNELS):
        fem = params[f'fpn_fem_{k}']
        inter, inter1 = c // 3, c - 2 * (c // 3)
        assert fem['branch1']['kernel'].shape == (3, 3, c, inter)
        assert fem['branch2_0']['kernel'].shape == (3, 3, c, inter)
        assert fem['branch2_2']['kernel'].shape == (3, 3, inter, inter)
        assert fem['branch3_0']['kernel'].shape == (3, 3, c, inter1)
        assert fem['branch3_2']['kernel'].shape == (3, 3, inter1, inter1)
        assert fem['branch3_4']['kernel'].shape == (3, 3, inter1, inter1)
    # The documented splits, spelled out: 256 -> 85/85/86, 512 -> 170/170/172, 1024 -> 341/341/342.
    for k, (c, i, j) in {0: (256, 85, 86), 1: (512, 170, 172), 3: (1024, 341, 342)}.items():
        fem = params[f'fpn_fem_{k}']
        assert fem['branch1']['kernel'].shape[2:] == fem['branch2_0']['kernel'].shape[2:] == (c, i)
        assert fem['branch3_0']['kernel'].shape[2:] == (c, j)


def test_l2norm_init_and_zero_pixel_gradient():
    x = np.zeros((1, 2, 2, 4), np.float32)
    x[0, 0, 0] = [3.0, 4.0, 0.0, 0.0]
    for scale in (10.0, 8.0, 5.0):
        layer = dsfd.L2Norm(scale)
        variables = layer.init(jax.random.key(0), x)
        np.testing.assert_array_equal(variables['params']['scale'], np.full(4, scale))
        y = layer.apply(variables, x)
        close(y[0, 0, 0], [0.6 * scale, 0.8 * scale, 0.0, 0.0], 1e-6)
        assert (np.asarray(y[0, 1]) == 0).all()
        grad = jax.grad(lambda v, f=layer.apply, p=variables: f(p, v).sum())(jnp.asarray(x))
        assert np.isfinite(np.asarray(grad)).all()


def test_dsfd_l2norm_scales_at_init():
    model = dsfd.DSFD(width=SMALL)

    @jax.jit
    def init_subset(key, images):  # Only the constant-init params: jit drops the RNG work.
        params = model.init(key, images)['params']
        subset = {k: v for k, v in params.items() if k.startswith('L2Norm')}
        return subset, params['fpn_fem_0']['branch1']['bias']

    params, fem_bias = init_subset(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    for i, scale in enumerate(dsfd.L2NORM_SCALES):
        for name in (f'L2Normof{i + 1}', f'L2Normef{i + 1}'):
            np.testing.assert_array_equal(params[name]['scale'], scale)
    assert fem_bias.shape == (10,) and not np.asarray(fem_bias).any()


def test_torch_keys_match_reference_list():
    keys = list(dsfd.torch_key_shapes())
    expected = []
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33):
        expected += [f'vgg.{i}.weight', f'vgg.{i}.bias']
    expected += [f'L2Normof{i}.weight' for i in (1, 2, 3)]
    for group, n in (('extras', 4), ('fpn_topdown', 6), ('fpn_latlayer', 5)):
        for i in range(n):
            expected += [f'{group}.{i}.weight', f'{group}.{i}.bias']
    for k in range(6):
        for conv in ('branch1', 'branch2.0', 'branch2.2', 'branch3.0', 'branch3.2', 'branch3.4'):
            expected += [f'fpn_fem.{k}.{conv}.weight', f'fpn_fem.{k}.{conv}.bias']
    expected += [f'L2Normef{i}.weight' for i in (1, 2, 3)]
    for group in ('loc_pal1', 'conf_pal1', 'loc_pal2', 'conf_pal2'):
        for i in range(6):
            expected += [f'{group}.{i}.weight', f'{group}.{i}.bias']
    assert keys == expected  # same keys, PyTorch registration order
    shapes = dsfd.torch_key_shapes()
    assert shapes['vgg.0.weight'] == (64, 3, 3, 3)
    assert shapes['vgg.31.weight'] == (1024, 512, 3, 3)
    assert shapes['vgg.33.weight'] == (1024, 1024, 1, 1)
    assert shapes['L2Normof2.weight'] == (512,)
    assert shapes['fpn_topdown.2.weight'] == (1024, 512, 1, 1)
    assert shapes['fpn_latlayer.1.weight'] == (1024, 1024, 1, 1)
    assert shapes['fpn_fem.3.branch3.4.weight'] == (342, 342, 3, 3)
    assert shapes['loc_pal1.3.weight'] == (4, 1024, 3, 3)
    assert shapes['conf_pal2.5.weight'] == (2, 256, 3, 3)


def test_state_dict_round_trip():
    sd = random_state_dict(SMALL, seed=3)
    params = dsfd.params_from_torch_state_dict(sd, width=SMALL)
    model = dsfd.DSFD(width=SMALL)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    ref = jax.eval_shape(model.init, jax.random.key(0), images)
    assert jax.tree.structure(params) == jax.tree.structure(ref['params'])
    assert [x.shape for x in jax.tree.leaves(params)] == [
        x.shape for x in jax.tree.leaves(ref['params'])
    ]
    back = dsfd.params_to_torch_state_dict(params)
    assert list(back) == list(sd)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key])
    # Spot checks of the key -> path mapping.
    np.testing.assert_array_equal(
        params['vgg']['conv6']['kernel'], sd['vgg.31.weight'].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        params['fpn_fem_4']['branch2_2']['bias'], sd['fpn_fem.4.branch2.2.bias']
    )
    np.testing.assert_array_equal(params['L2Normef3']['scale'], sd['L2Normef3.weight'])
    np.testing.assert_array_equal(
        params['conf_pal2_1']['kernel'], sd['conf_pal2.1.weight'].transpose(2, 3, 1, 0)
    )


def test_state_dict_errors():
    sd = random_state_dict(SMALL)
    bad = dict(sd)
    del bad['fpn_fem.2.branch3.4.bias']
    bad['fpn_fem.6.branch1.weight'] = np.zeros(1)
    bad['vgg.31.weight'] = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError) as err:
        dsfd.params_from_torch_state_dict(bad, width=SMALL)
    message = str(err.value)
    assert 'missing keys (1): fpn_fem.2.branch3.4.bias' in message
    assert 'unexpected keys (1): fpn_fem.6.branch1.weight' in message
    assert re.search(r'vgg\.31\.weight: \(1, 2, 3, 3\) != expected \(128, 64, 3, 3\)', message)
    # A DataParallel `module.` prefix is accepted.
    prefixed = {f'module.{k}': v for k, v in sd.items()}
    params = dsfd.params_from_torch_state_dict(prefixed, width=SMALL)
    np.testing.assert_array_equal(params['extras_2']['bias'], sd['extras.2.bias'])
