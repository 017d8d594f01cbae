"""Tests for tools/convert_torch_weights.py and safefakes_jax.models.torch_import (width 0.125)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tools'))

import convert_torch_weights  # noqa: E402

from safefakes_jax.models import dsfd, torch_import  # noqa: E402
from safefakes_jax.models.vgg import TORCH_INDEX, VGG16  # noqa: E402

WIDTH = 0.125
MEAN_RGB = np.array([123.0, 117.0, 104.0], np.float32)


def random_state_dict(width: float = WIDTH, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in dsfd.torch_key_shapes(width).items()
    }


def backbone_state_dict(width: float = WIDTH, seed: int = 1) -> dict[str, np.ndarray]:
    """The 30 `vgg16_reducedfc.pth` keys (`{i}.weight/bias`) of a width-scaled backbone."""
    full = random_state_dict(width, seed)
    return {k[len('vgg.') :]: v for k, v in full.items() if k.startswith('vgg.')}


def convert(tmp_path, sd, fmt, *extra, name='ckpt'):
    src = tmp_path / f'{name}.npz'
    np.savez(src, **sd)
    out = tmp_path / name
    status = convert_torch_weights.main(
        [f'--format={fmt}', f'--src={src}', f'--out={out}', '--width', str(WIDTH), *extra]
    )
    return status, out


def assert_trees_equal(a, b):
    fa, fb = traverse_util.flatten_dict(dict(a)), traverse_util.flatten_dict(dict(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.asarray(fa[k]).dtype == np.float32, k
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def test_dsfd_vgg_roundtrip_bit_exact(tmp_path, capsys):
    sd = random_state_dict()
    assert len(sd) == 186
    status, out = convert(tmp_path, sd, 'dsfd_vgg')
    assert status == 0
    assert 'dsfd_vgg' in capsys.readouterr().out
    params = torch_import.load_converted(out)
    assert_trees_equal(params, dsfd.params_from_torch_state_dict(sd, width=WIDTH))
    info = torch_import.load_conversion_info(out)
    assert info['format'] == 'dsfd_vgg' and info['channel_order'] == 'rgb'
    assert info['width'] == WIDTH and not info['partial']
    assert info['sha256'] == torch_import.file_sha256(tmp_path / 'ckpt.npz')
    assert info['num_params'] == sum(v.size for v in sd.values())
    # The restored params drive the model (abstractly: no full forward here).
    shapes = jax.eval_shape(
        dsfd.DSFD(width=WIDTH).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
    )['params']
    assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, params)
    # Restoring the orbax folder itself also works; no temporary folders are left behind.
    assert_trees_equal(torch_import.load_converted(out / 'checkpoint'), params)
    assert sorted(os.listdir(tmp_path)) == ['ckpt', 'ckpt.npz']


def test_dsfd_vgg_bgr_flips_only_first_conv(tmp_path):
    sd = random_state_dict()
    status, out = convert(tmp_path, sd, 'dsfd_vgg', '--channel_order', 'bgr')
    assert status == 0
    got = traverse_util.flatten_dict(torch_import.load_converted(out))
    ref = traverse_util.flatten_dict(dsfd.params_from_torch_state_dict(sd, width=WIDTH))
    for k, v in ref.items():
        want = v[:, :, ::-1, :] if k == ('vgg', 'conv1_1', 'kernel') else v
        np.testing.assert_array_equal(got[k], want, err_msg=str(k))


def correlate_oihw(weight, bias, image_chw):
    """Direct 3x3 pad-1 cross-correlation (PyTorch conv2d) in numpy; [O, H, W]."""
    _, _, kh, kw = weight.shape
    _, h, w = image_chw.shape
    padded = np.pad(image_chw.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], h, w)) + bias[:, None, None]
    for i in range(kh):
        for j in range(kw):
            out += np.einsum('oc,chw->ohw', weight[:, :, i, j], padded[:, i : i + h, j : j + w])
    return out


def test_vgg16_reducedfc_mapping_and_channel_flip(tmp_path):
    sd = backbone_state_dict()
    assert len(sd) == 30 and set(sd) == {
        f'{i}.{leaf}' for i in TORCH_INDEX.values() for leaf in ('weight', 'bias')
    }
    status, out = convert(tmp_path, sd, 'vgg16_reducedfc')  # Default: BGR source weights.
    assert status == 0
    params = torch_import.load_converted(out)
    assert set(params) == {'vgg'} and set(params['vgg']) == set(TORCH_INDEX)
    assert torch_import.load_conversion_info(out)['channel_order'] == 'bgr'
    for name, i in TORCH_INDEX.items():
        np.testing.assert_array_equal(params['vgg'][name]['bias'], sd[f'{i}.bias'])
        kernel = np.transpose(sd[f'{i}.weight'], (2, 3, 1, 0))
        if name == 'conv1_1':
            kernel = kernel[:, :, ::-1, :]
        np.testing.assert_array_equal(params['vgg'][name]['kernel'], kernel)

    # Our first conv on RGB - (123, 117, 104) == the torch conv on BGR - (104, 117, 123).
    rgb = np.random.default_rng(2).integers(0, 256, (32, 32, 3)).astype(np.float32)
    ours_in = (rgb - MEAN_RGB)[None]
    bgr_in = (rgb[..., ::-1] - MEAN_RGB[::-1]).transpose(2, 0, 1)
    want = correlate_oihw(sd['0.weight'].astype(np.float64), sd['0.bias'], bgr_in)
    _, state = VGG16(width=WIDTH).apply(
        {'params': params['vgg']}, ours_in, capture_intermediates=lambda m, _: m.name == 'conv1_1'
    )
    got = np.asarray(state['intermediates']['conv1_1']['__call__'][0][0]).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)
    # Without the flip (--channel_order rgb) the outputs differ.
    assert convert(tmp_path, sd, 'vgg16_reducedfc', '--channel_order=rgb', name='rgb')[0] == 0
    unflipped = torch_import.load_converted(tmp_path / 'rgb')['vgg']
    _, state = VGG16(width=WIDTH).apply(
        {'params': unflipped}, ours_in, capture_intermediates=lambda m, _: m.name == 'conv1_1'
    )
    assert not np.allclose(
        state['intermediates']['conv1_1']['__call__'][0][0].transpose(2, 0, 1), want, atol=1.0
    )


def test_merge_params_puts_backbone_into_init():
    sd = backbone_state_dict()
    partial = torch_import.convert_state_dict(
        {f'module.vgg.{k}': v for k, v in sd.items()}, 'vgg16_reducedfc', WIDTH
    )
    init = jax.tree.map(
        np.zeros_like, dsfd.params_from_torch_state_dict(random_state_dict(), width=WIDTH)
    )
    merged = traverse_util.flatten_dict(torch_import.merge_params(init, partial))
    assert not np.any(merged[('extras_0', 'kernel')])
    np.testing.assert_array_equal(merged[('vgg', 'conv7', 'bias')], sd['33.bias'])
    with pytest.raises(ValueError, match='vgg/conv9'):
        torch_import.merge_params(init, {'vgg': {'conv9': {'bias': np.zeros(3)}}})


@pytest.mark.parametrize('fmt', ['dsfd_vgg', 'vgg16_reducedfc'])
def test_bad_keys_and_shapes_exit_2(tmp_path, capsys, fmt):
    sd = random_state_dict() if fmt == 'dsfd_vgg' else backbone_state_dict()
    status, out = convert(tmp_path, {**sd, 'bogus.weight': np.zeros(3, np.float32)}, fmt)
    assert status == 2
    err = capsys.readouterr().err
    assert 'unexpected keys (1): bogus.weight' in err and err.startswith('convert_torch_weights')
    bad_key = 'vgg.31.weight' if fmt == 'dsfd_vgg' else '31.weight'
    wrong = {**sd, bad_key: np.zeros((4, 4, 3, 3), np.float32)}
    status, out = convert(tmp_path, wrong, fmt, name='wrong')
    assert status == 2
    assert f'{bad_key}: (4, 4, 3, 3) != expected' in capsys.readouterr().err
    missing = dict(sd)
    del missing[bad_key]
    assert convert(tmp_path, missing, fmt, name='missing')[0] == 2
    assert f'missing keys (1): {bad_key}' in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(tmp_path / 'ckpt')


def test_pth_without_torch_says_how_to_make_npz(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError.
    src = tmp_path / 'weights.pth'
    src.write_bytes(b'not really a pickle')
    status = convert_torch_weights.main(
        ['--format=dsfd_vgg', f'--src={src}', f'--out={tmp_path / "out"}']
    )
    assert status == 2
    err = capsys.readouterr().err
    assert 'needs PyTorch' in err and 'numpy.savez(path, **{k: v.numpy()' in err
    assert (
        convert_torch_weights.main(
            ['--format=dsfd_vgg', f'--src={tmp_path / "nope.npz"}', f'--out={tmp_path / "o"}']
        )
        == 2
    )
    assert 'no such file' in capsys.readouterr().err


class _FakeTensor:
    def __init__(self, value):
        self.value = value

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.value


@pytest.mark.parametrize('wrapped', [False, True])
def test_pth_with_torch_and_yx_wrapper(tmp_path, monkeypatch, wrapped):
    """The .pth path with a stand-in `torch.load` (torch is not installed here)."""
    sd = random_state_dict()
    tensors = {k: _FakeTensor(v) for k, v in sd.items()}
    loaded = {'epoch': 3, 'weight': tensors} if wrapped else tensors
    calls = []

    class FakeTorch:
        @staticmethod
        def load(path, **kwargs):
            calls.append((path, kwargs))
            return loaded

    monkeypatch.setitem(sys.modules, 'torch', FakeTorch)
    src = tmp_path / 'dsfd.pth'
    src.write_bytes(b'x')
    out = tmp_path / 'out'
    assert (
        convert_torch_weights.main(
            ['--format=dsfd_vgg', f'--src={src}', f'--out={out}', f'--width={WIDTH}']
        )
        == 0
    )
    # Weights only: a .pth is a pickle, and nothing but tensors may be unpickled from it.
    assert calls == [(str(src), {'map_location': 'cpu', 'weights_only': True})]
    assert_trees_equal(
        torch_import.load_converted(out), dsfd.params_from_torch_state_dict(sd, width=WIDTH)
    )


def test_pth_that_weights_only_refuses_exits_2(tmp_path, monkeypatch, capsys):
    """A pickle holding more than tensors (what weights_only refuses), and a torch < 1.13."""
    import pickle

    class RefusingTorch:
        @staticmethod
        def load(path, map_location=None, weights_only=False):
            if weights_only:
                raise pickle.UnpicklingError('Weights only load failed: GLOBAL os.system')
            raise AssertionError('a full unpickle was attempted')

    class OldTorch:
        @staticmethod
        def load(path, map_location=None):  # No weights_only argument before torch 1.13.
            raise AssertionError('a full unpickle was attempted')

    src = tmp_path / 'evil.pth'
    src.write_bytes(b'x')
    for fake, expected in (
        (
            RefusingTorch,
            'weights_only=True) refused or failed (UnpicklingError: Weights only load failed',
        ),
        (OldTorch, 'needs torch >= 1.13'),
    ):
        monkeypatch.setitem(sys.modules, 'torch', fake)
        out = tmp_path / fake.__name__
        assert (
            convert_torch_weights.main(['--format=dsfd_vgg', f'--src={src}', f'--out={out}']) == 2
        )
        err = capsys.readouterr().err
        assert expected in err and str(src) in err
        assert not os.path.exists(out)


def test_help_says_weights_only(capsys):
    with pytest.raises(SystemExit):
        convert_torch_weights.main(['--help'])
    assert 'weights_only=True' in capsys.readouterr().out
    assert 'weights_only=True' in torch_import.__doc__


def test_existing_out_refused_unless_force(tmp_path, capsys):
    sd = backbone_state_dict()
    assert convert(tmp_path, sd, 'vgg16_reducedfc')[0] == 0
    sd2 = backbone_state_dict(seed=5)
    status, out = convert(tmp_path, sd2, 'vgg16_reducedfc')
    assert status == 2
    assert 'not empty (use --force' in capsys.readouterr().err
    np.testing.assert_array_equal(
        torch_import.load_converted(out)['vgg']['conv7']['bias'], sd['33.bias']
    )
    assert convert(tmp_path, sd2, 'vgg16_reducedfc', '--force')[0] == 0
    np.testing.assert_array_equal(
        torch_import.load_converted(out)['vgg']['conv7']['bias'], sd2['33.bias']
    )
    assert sorted(os.listdir(tmp_path)) == ['ckpt', 'ckpt.npz']
    assert json.loads((out / 'conversion.json').read_text())['partial'] is True
    # An existing empty folder is fine.
    (tmp_path / 'empty').mkdir()
    assert convert(tmp_path, sd, 'vgg16_reducedfc', name='empty')[0] == 0


def test_load_converted_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        torch_import.load_converted(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='no checkpoint/ subfolder'):
        torch_import.load_converted(tmp_path)


def test_deepprivacy_v1_conversion_feeds_the_anonymizer(tmp_path, capsys):
    """A DeepPrivacy state dict (at 1/16 width) through the CLI: the anonymizer's generator
    gives the outputs of the params mapped directly."""
    from safefakes_jax.anonymizers import deepprivacy as dp_anonymizer
    from safefakes_jax.models import deepprivacy

    width = 0.0625
    rng = np.random.default_rng(0)
    sd = {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in deepprivacy.torch_key_shapes(width=width).items()
    }
    src = tmp_path / 'dp.npz'
    np.savez(src, **sd)
    out = tmp_path / 'dp'
    args = ['--format=deepprivacy_v1', f'--src={src}', f'--out={out}', f'--width={width}']
    assert convert_torch_weights.main(args) == 0
    assert 'deepprivacy_v1' in capsys.readouterr().out
    model, params, sha, _ = dp_anonymizer.load_generator(str(out))
    assert (model.width, model.resolution) == (width, 128) and len(sha) == 64
    direct = deepprivacy.params_from_torch_state_dict(sd, width=width)
    x = (jnp.zeros((1, 128, 128, 3)), jnp.full((1, 7, 2), 0.3), jnp.zeros((1, 4, 4, 32)))
    np.testing.assert_array_equal(
        model.apply({'params': params}, *x), model.apply({'params': direct}, *x)
    )
    bad = dict(sd)
    bad.pop(next(iter(bad)))
    np.savez(tmp_path / 'bad.npz', **bad)
    assert (
        convert_torch_weights.main(
            [*args[:1], f'--src={tmp_path / "bad.npz"}', f'--out={tmp_path / "bad"}', args[3]]
        )
        == 2
    )
    assert 'missing' in capsys.readouterr().err


@pytest.mark.slow  # ~30 s: the full Inception twice; make test-all.
def test_fid_inception_conversion_feeds_fid(tmp_path, capsys):
    """A random pytorch-fid state dict (.npz, wrapper names) through the CLI: the FID loader's
    features are those of the variables mapped directly; no folder is a clear unavailable."""
    from safefakes_jax.evaluation import fid
    from safefakes_jax.models import inception
    from tests.test_inception import _random_state_dict

    sd = _random_state_dict(seed=4)
    src = tmp_path / 'inception.npz'
    np.savez(src, **sd)
    out = tmp_path / 'fid_inception'
    assert (
        convert_torch_weights.main(['--format=fid_inception', f'--src={src}', f'--out={out}']) == 0
    )
    assert '21,785,568 parameters' in capsys.readouterr().out
    x = np.random.default_rng(0).random((2, 48, 48, 3)).astype(np.float32)
    direct = inception.FIDInception().apply(inception.params_from_torch_state_dict(sd), x)
    np.testing.assert_allclose(fid.load(str(out))(x), direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(fid.FIDUnavailableError, match='--format=fid_inception'):
        fid.load(str(tmp_path / 'nothing'))
