"""CIAGAN training on the shared loop (`train/ciagan_trainer.py`, `ciagan_step.py`): the `:tiny`
config on a tiny synthetic set moves its losses, resumes to the same losses with its
spectral-norm state restored, exports the generator the anonymizer loads; the step ratio."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import ciagan_celeba
from safefakes_jax.data import synthetic
from safefakes_jax.models import torch_import
from safefakes_jax.train import ciagan_step, ciagan_trainer


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp('wider')
    synthetic.generate(out, 6, 2, seed=0, workers=1, progress=False, width=320)
    return str(out)


def tiny_config(root, steps=3):
    config = ciagan_celeba.get_config('tiny')
    config.data.update(train=root, val=root, min_face_px=10)
    config.train.steps = steps
    return config


def _sn_state(variables):
    flat = traverse_util.flatten_dict(dict(variables))
    return {k: np.asarray(v) for k, v in flat.items() if k[-1] in ('u', 'v')}


def test_tiny_training_moves_resumes_and_exports(root, tmp_path, jax_compile_cache):
    config = tiny_config(root)
    full = ciagan_trainer.train_and_evaluate(config, str(tmp_path / 'full'))
    history = full['history']
    assert full['steps'] == 3 and len(history) == 3
    for key in ('d_loss', 'g_loss', 'g_gan', 'g_identity', 'identity_loss', 'd_real', 'd_fake'):
        assert all(np.isfinite(h[key]) for h in history), key
    assert len({round(h['g_loss'], 6) for h in history}) > 1  # The losses move.
    assert len({round(h['d_loss'], 6) for h in history}) > 1
    results = json.loads((tmp_path / 'full' / 'results.json').read_text())
    assert 0 < results['val_l1_mask'] < 1 and results['export'].endswith('generator')
    assert (tmp_path / 'full' / 'val_faces.png').is_file()

    cut = str(tmp_path / 'cut')
    first = ciagan_trainer.train_and_evaluate(config, cut, stop_after=2)
    assert first['stopped_at'] == 2
    # Training moved the spectral-norm vectors; the resumed run must restore them from the
    # checkpoint to end where the uninterrupted one did (below).
    exported = torch_import.load_converted(results['export'])
    init = ciagan_trainer.build_models(config)[0].init(
        jax.random.key(0), *[np.zeros((1, 16, 16, 3), np.float32)] * 2, np.zeros((1, 200))
    )
    sn = _sn_state(exported)
    assert len(sn) > 10 and any(not np.allclose(sn[k], v) for k, v in _sn_state(init).items())
    second = ciagan_trainer.train_and_evaluate(config, cut)
    resumed = first['history'] + second['history']
    for a, b in zip(history, resumed, strict=True):
        for k in ('d_loss', 'g_loss', 'identity_loss'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)
    again = torch_import.load_converted(str(tmp_path / 'cut' / 'generator'))
    for k, v in _sn_state(again).items():  # Resumed state == uninterrupted state.
        np.testing.assert_allclose(v, sn[k], rtol=1e-4, atol=1e-6)


def test_step_counts_and_errors(root):
    assert ciagan_step.sub_batches(1, 5, 1) == 12  # The paper's code default.
    config = tiny_config(root)
    g, d, s = ciagan_trainer.build_models(config)
    with pytest.raises(ValueError, match='critic and a generator'):
        ciagan_step.make_train_step(g, d, s, None, n_critic=0)
    config.model.num_classes = 3
    with pytest.raises(ValueError, match='num_classes=3'):
        ciagan_trainer.train_and_evaluate(config, '/nonexistent/never-written')
