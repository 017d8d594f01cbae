"""The FID Inception (`models/inception.py`): parameter count, the torch mapping in both namings,
two blocks (average pool without padding counts; Mixed_7c's max pool) and the resize against
numpy computations written from the torch state dict, and the [N, 2048] output."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from safefakes_jax.models import inception


def _random_state_dict(seed=0):
    """pytorch-fid's wrapper state dict (`blocks.*` names) with random values."""
    rng = np.random.default_rng(seed)
    shapes = traverse_util.flatten_dict(inception._shapes())
    names = {v: k for k, v in inception.TORCH_BLOCKS.items()}
    sd = {}
    for path, shape in shapes.items():
        collection, module, *inner, kind, leaf = path
        prefix = '.'.join([names[module], *inner, kind])
        if leaf == 'kernel':
            o = shape[3]
            fan_in = shape[0] * shape[1] * shape[2]
            w = rng.standard_normal((o, shape[2], shape[0], shape[1])) / np.sqrt(fan_in)
            sd[f'{prefix}.weight'] = w.astype(np.float32)
        elif collection == 'params':
            base = 1.0 if leaf == 'scale' else 0.0
            key = 'weight' if leaf == 'scale' else 'bias'
            sd[f'{prefix}.{key}'] = (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            value = rng.uniform(0.5, 1.5, shape) if leaf == 'var' else rng.normal(0, 0.1, shape)
            key = 'running_var' if leaf == 'var' else 'running_mean'
            sd[f'{prefix}.{key}'] = value.astype(np.float32)
            if leaf == 'var':
                sd[f'{prefix}.num_batches_tracked'] = np.array(0, np.int64)
    return sd


@pytest.fixture(scope='module')
def state_dict():
    return _random_state_dict()


def test_parameter_count_and_both_namings(state_dict):
    variables = inception.params_from_torch_state_dict(state_dict)
    assert sum(x.size for x in jax.tree.leaves(variables['params'])) == 21_785_568
    convs = [k for k in state_dict if k.endswith('.conv.weight')]
    assert len(convs) == inception.NUM_CONVS
    # The .pth's torchvision names (and its unused fc) give the same variables.
    pth = {inception._module_prefix(k): v for k, v in state_dict.items()}
    pth['fc.weight'], pth['fc.bias'] = np.zeros((1008, 2048)), np.zeros(1008)
    again = inception.params_from_torch_state_dict(pth)
    jax.tree.map(np.testing.assert_array_equal, again, variables)
    with pytest.raises(ValueError, match='missing'):
        inception.params_from_torch_state_dict(
            {k: v for k, v in state_dict.items() if not k.startswith('blocks.3.2.branch_pool')}
        )
    bad = dict(state_dict, **{'blocks.0.0.conv.weight': np.zeros((32, 3, 5, 5))})
    with pytest.raises(ValueError, match=r'blocks.0.0.conv.weight: shape \(32, 3, 5, 5\)'):
        inception.params_from_torch_state_dict(bad)


def _np_basic(sd, prefix, x, stride=1, pad=(0, 0)):
    """BasicConv2d in numpy from the torch tensors: conv (OIHW) -> BN eval -> ReLU."""
    w = sd[f'{prefix}.conv.weight'].astype(np.float64)
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::stride, ::stride]
    y = np.einsum('hwcij,ocij->hwo', win, w)
    g, b = sd[f'{prefix}.bn.weight'], sd[f'{prefix}.bn.bias']
    m, v = sd[f'{prefix}.bn.running_mean'], sd[f'{prefix}.bn.running_var']
    return np.maximum((y - m) / np.sqrt(v + 1e-3) * g + b, 0)


def _np_pool(x, kind):
    """3 x 3 stride 1 pad 1: average without counting padding, or max."""
    fill = 0.0 if kind == 'avg' else -np.inf
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(0, 1))
    if kind == 'max':
        return win.max(axis=(3, 4))
    ones = np.pad(np.ones(x.shape[:2]), 1)
    count = np.lib.stride_tricks.sliding_window_view(ones, (3, 3)).sum(axis=(2, 3))
    return win.sum(axis=(3, 4)) / count[..., None]


def _np_mixed_5b(sd, x):
    p = 'blocks.2.0'
    b1 = _np_basic(sd, f'{p}.branch1x1', x)
    b5 = _np_basic(sd, f'{p}.branch5x5_2', _np_basic(sd, f'{p}.branch5x5_1', x), pad=(2, 2))
    b3 = _np_basic(sd, f'{p}.branch3x3dbl_1', x)
    b3 = _np_basic(sd, f'{p}.branch3x3dbl_2', b3, pad=(1, 1))
    b3 = _np_basic(sd, f'{p}.branch3x3dbl_3', b3, pad=(1, 1))
    bp = _np_basic(sd, f'{p}.branch_pool', _np_pool(x, 'avg'))
    return np.concatenate([b1, b5, b3, bp], -1)


def _np_mixed_7c(sd, x):
    p = 'blocks.3.2'
    b1 = _np_basic(sd, f'{p}.branch1x1', x)
    b3 = _np_basic(sd, f'{p}.branch3x3_1', x)
    b3 = np.concatenate(
        [
            _np_basic(sd, f'{p}.branch3x3_2a', b3, pad=(0, 1)),
            _np_basic(sd, f'{p}.branch3x3_2b', b3, pad=(1, 0)),
        ],
        -1,
    )
    bd = _np_basic(sd, f'{p}.branch3x3dbl_2', _np_basic(sd, f'{p}.branch3x3dbl_1', x), pad=(1, 1))
    bd = np.concatenate(
        [
            _np_basic(sd, f'{p}.branch3x3dbl_3a', bd, pad=(0, 1)),
            _np_basic(sd, f'{p}.branch3x3dbl_3b', bd, pad=(1, 0)),
        ],
        -1,
    )
    bp = _np_basic(sd, f'{p}.branch_pool', _np_pool(x, 'max'))
    return np.concatenate([b1, b3, bd, bp], -1)


@pytest.mark.parametrize(
    'name, module, channels, reference',
    [
        ('Mixed_5b', inception.InceptionA(32), 192, _np_mixed_5b),
        ('Mixed_7c', inception.InceptionE(max_pool=True), 2048, _np_mixed_7c),
    ],
)
def test_blocks_against_numpy(state_dict, name, module, channels, reference):
    variables = inception.params_from_torch_state_dict(state_dict)
    block = {c: variables[c][name] for c in ('params', 'batch_stats')}
    x = np.random.default_rng(1).standard_normal((5, 6, channels)).astype(np.float32)
    got = np.asarray(module.apply(block, x[None]))[0]
    want = reference(state_dict, x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _np_torch_bilinear(x, size):
    """torch's bilinear, align_corners=False: src = (dst + 0.5) * in / out - 0.5, clamped."""

    def axis_weights(n_in):
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), lo), 1 - (src - lo))
        np.add.at(m, (np.arange(size), hi), src - lo)
        return m

    rows, cols = axis_weights(x.shape[0]), axis_weights(x.shape[1])
    return np.einsum('jw,iwc->ijc', cols, np.einsum('ih,hwc->iwc', rows, x))


@pytest.mark.parametrize('shape', [(128, 128), (64, 90), (400, 350)])
def test_resize_matches_torch_bilinear(shape):
    x = np.random.default_rng(2).random((1, *shape, 3)).astype(np.float32)
    got = np.asarray(inception.resize_bilinear(x))[0]
    # float32 sampling positions ((i + 0.5) * scale - 0.5) are off by ~i * 6e-8: at 400 px
    # that is 2.4e-5 of a weight, hence the tolerance (a different filter would be ~1e-1).
    want = _np_torch_bilinear(x[0].astype(np.float64), 299)
    np.testing.assert_allclose(got, want, atol=5e-5)


def test_features_are_2048_per_image(state_dict):
    variables = inception.params_from_torch_state_dict(state_dict)
    x = np.random.default_rng(3).random((2, 64, 64, 3)).astype(np.float32)
    feats = np.asarray(jax.jit(inception.FIDInception().apply)(variables, x))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.std() > 0
    one = np.asarray(jax.jit(inception.FIDInception().apply)(variables, x[:1]))
    np.testing.assert_allclose(one, feats[:1], rtol=1e-4, atol=1e-5)
