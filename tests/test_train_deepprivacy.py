"""DeepPrivacy training on the shared loop (`train/deepprivacy_trainer.py`, `deepprivacy_step.py`):
the `:tiny` config on synthetic crops moves its losses, resumes to the same losses, exports the
EMA generator that the anonymizer loads; the gradient penalty variants; the launch script."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deepprivacy_fdf
from safefakes_jax import sharding
from safefakes_jax.anonymizers import base
from safefakes_jax.data import face_crops, synthetic
from safefakes_jax.models import gan_layers
from safefakes_jax.train import deepprivacy_step, deepprivacy_trainer
from safefakes_jax.train import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def crops(tmp_path_factory):
    root = tmp_path_factory.mktemp('wider')
    synthetic.generate(root, 4, 2, seed=0, workers=1, progress=False, width=320)
    out = tmp_path_factory.mktemp('crops')
    for split in ('train', 'val'):
        face_crops.make_face_crops(root, split, size=32, out_dir=out, min_face_px=10)
    return str(out / 'train_32.npz'), str(out / 'val_32.npz')


def tiny_config(crops, steps=4):
    config = deepprivacy_fdf.get_config('tiny')
    config.data.update(train=crops[0], val=crops[1])
    config.train.steps = steps
    config.loss.update(gp='v2', lazy_every=2)  # The lazy penalty: even steps only.
    return config


def test_box_mask_and_condition():
    images = np.full((1, 4, 4, 3), 255, np.uint8)
    real, mask, condition = gan_layers.masked_condition(images, jnp.array([[1, 0, 3, 2]]))
    want = np.zeros((4, 4), np.float32)
    want[0:2, 1:3] = 1
    np.testing.assert_array_equal(mask[0, ..., 0], want)
    np.testing.assert_array_equal(condition[0, ..., 0], 1 - want)
    assert float(real.min()) == 1.0


def test_tiny_training_moves_resumes_and_exports(crops, tmp_path):
    config = tiny_config(crops, steps=4)
    full = deepprivacy_trainer.train_and_evaluate(config, str(tmp_path / 'full'))
    history = full['history']
    assert full['steps'] == 4 and len(history) == 4
    for key in ('d_loss', 'g_loss', 'gradient_penalty', 'd_real', 'd_fake', 'g_grad_norm'):
        assert all(np.isfinite(h[key]) for h in history), key
    assert len({round(h['g_loss'], 6) for h in history}) > 1  # The losses move.
    assert history[1]['gradient_penalty'] == 0 == history[3]['gradient_penalty']  # Lazy.
    results = json.loads((tmp_path / 'full' / 'results.json').read_text())
    assert 0 < results['val_l1'] < 1 and results['export'].endswith('generator')
    assert (tmp_path / 'full' / 'val_faces.png').is_file()

    cut = str(tmp_path / 'cut')
    first = deepprivacy_trainer.train_and_evaluate(config, cut, stop_after=2)
    assert first['stopped_at'] == 2
    second = deepprivacy_trainer.train_and_evaluate(config, cut)
    resumed = first['history'] + second['history']
    for a, b in zip(history, resumed, strict=True):
        for k in ('d_loss', 'g_loss', 'gradient_penalty'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)

    # The export is the EMA generator, and the anonymizer runs it.
    method = base.create('deepprivacy', params=results['export'], keypoints='none')
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    out = method(image, np.array([[10, 10, 30, 30]]))
    assert out.records == ['anonymized'] and method.params()['resolution'] == 16


@pytest.mark.parametrize('gp', ['v1', 'v2'])
def test_gradient_penalty_variants(crops, gp):
    """v1's two-sided penalty is positive at init; v2's one-sided, box-masked one is 0 while
    the critic's gradient norm inside the box is below 1, and positive once it is scaled up."""
    config = tiny_config(crops)
    config.loss.gp = gp
    config.loss.lazy_every = 1
    mesh = sharding.make_mesh(1)
    g, d = deepprivacy_trainer.build_models(config)
    state = state_lib.create(deepprivacy_trainer.specs(config, g, d), jax.random.key(0), mesh)
    step = deepprivacy_trainer.make_step(config, g, d, mesh)
    r = config.model.resolution
    batch = {
        'image': jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, r, r, 3), np.uint8)),
        'box': jnp.array([[4, 4, 12, 12]] * 4, jnp.int32),
        'keypoints': jnp.full((4, 7, 2), 0.5, jnp.float32),
    }
    state, metrics = step(state, batch, jax.random.key(1))  # The old state is donated.
    assert np.isfinite(float(metrics['d_loss']))
    if gp == 'v1':
        assert float(metrics['gradient_penalty']) > 0
    else:  # Scale the critic's weights: its input gradient grows by orders of magnitude.
        d_net = state.nets[deepprivacy_step.DISCRIMINATOR]
        big = jax.tree.map(lambda p: p * 10.0, d_net.params)
        state = state.update(**{deepprivacy_step.DISCRIMINATOR: d_net.replace(params=big)})
        _, scaled = step(state, batch, jax.random.key(1))
        assert float(scaled['gradient_penalty']) > 0
    with pytest.raises(ValueError, match='gp must be one of'):
        deepprivacy_step.make_train_step(g, d, mesh, gp='v3')


def test_launch_train_runs_the_deepprivacy_config(crops, tmp_path):
    cmd = [
        sys.executable,
        os.path.join(REPO, 'launch/train.py'),
        '--config=configs/deepprivacy_fdf.py:tiny',
        f'--config.data.train={crops[0]}',
        f'--config.data.val={crops[1]}',
        f'--workdir={tmp_path / "run"}',
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'val_l1' in run.stdout and (tmp_path / 'run' / 'generator').is_dir()
    missing = cmd[:3] + ['--config.data.train=/nonexistent.npz', f'--workdir={tmp_path / "x"}']
    run = subprocess.run(missing, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and 'make_synthetic_wider.py' in run.stderr
