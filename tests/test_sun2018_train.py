"""Sun2018 training on the shared loop (`train/sun2018_trainer.py`): the `:tiny` config on
synthetic crops moves its losses, resumes to the same losses, evaluates and exports the
generator that the `sun2018` anonymizer loads; the model summary tool prints its networks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import sun2018_pipa
from safefakes_jax.anonymizers import base
from safefakes_jax.anonymizers import sun2018 as sun2018_anonymizer
from safefakes_jax.data import face_crops, synthetic
from safefakes_jax.models import torch_import
from safefakes_jax.train import sun2018_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def crops(tmp_path_factory):
    root = tmp_path_factory.mktemp('wider')
    synthetic.generate(root, 4, 2, seed=0, workers=1, progress=False, width=320)
    out = tmp_path_factory.mktemp('crops')
    for split in ('train', 'val'):
        face_crops.make_face_crops(root, split, size=32, out_dir=out, min_face_px=10)
    return str(out / 'train_32.npz'), str(out / 'val_32.npz')


def test_tiny_training_moves_resumes_and_exports(crops, tmp_path, jax_compile_cache):
    config = sun2018_pipa.get_config('tiny')
    config.data.update(train=crops[0], val=crops[1])
    config.train.steps = 4
    full = sun2018_trainer.train_and_evaluate(config, str(tmp_path / 'full'))
    history = full['history']
    assert full['steps'] == 4 and len(history) == 4
    for key in ('d_loss', 'g_loss', 'g_adv', 'g_l1', 'd_real', 'd_fake', 'g_grad_norm'):
        assert all(np.isfinite(h[key]) for h in history), key
    assert len({round(h['g_loss'], 6) for h in history}) > 1  # The losses move.
    assert len({round(h['d_loss'], 6) for h in history}) > 1
    results = json.loads((tmp_path / 'full' / 'results.json').read_text())
    assert 0 < results['val_l1'] < 1 and 0 < results['val_l1_box'] < 1
    assert results['export'].endswith('generator')
    assert (tmp_path / 'full' / 'val_faces.png').is_file()
    info = torch_import.load_conversion_info(results['export'])
    assert info['format'] == 'sun2018' and info['resolution'] == 32 and info['step'] == 4
    assert info['train_faces'] == results['train_faces'] > 0

    cut = str(tmp_path / 'cut')
    first = sun2018_trainer.train_and_evaluate(config, cut, stop_after=2)
    assert first['stopped_at'] == 2
    assert os.listdir(os.path.join(cut, 'checkpoints'))
    second = sun2018_trainer.train_and_evaluate(config, cut)
    assert second['steps'] == 4 and len(second['history']) == 2  # Resumed at step 2.
    resumed = first['history'] + second['history']
    for a, b in zip(history, resumed, strict=True):
        for k in ('d_loss', 'g_loss', 'g_l1'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)

    # The export is what the anonymizer runs.
    method = base.create('sun2018', params=results['export'], keypoints='none')
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    out = method(image, np.array([[10, 10, 30, 30]]))
    assert out.records == [sun2018_anonymizer.NO_LANDMARKS]
    assert method.params()['resolution'] == 32
    assert method.params()['generator']['train_faces'] == results['train_faces']


def test_model_summary_prints_both_networks():
    run = subprocess.run(
        [sys.executable, 'tools/model_summary.py', '--config=configs/sun2018_pipa.py'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-2] == 'params[generator]=41899203'
    assert lines[-1] == 'params[discriminator]=2838337'


def test_a_metric_evaluator_runs_the_sun2018_generator(crops):
    """The shared GAN evaluators (`generated_faces`) run Sun2018 through its `inpaint`, with
    the crops' 68 landmarks."""
    import jax

    from safefakes_jax import sharding
    from safefakes_jax.evaluation import evaluators
    from safefakes_jax.train import state as state_lib

    config = sun2018_pipa.get_config('tiny')
    config.data.update(train=crops[0], val=crops[1])
    mesh = sharding.make_mesh()
    g, d = sun2018_trainer.build_models(config)
    state = state_lib.create(sun2018_trainer.specs(config, g, d), jax.random.key(0), mesh)
    context = evaluators.Context(config, {'generator': g, 'discriminator': d}, mesh)
    evaluator = evaluators.build_one(
        'm', {'type': 'ssim', 'num_faces': 8, 'batch_size': 8}, context
    )
    assert evaluator.batches[0]['keypoints'].shape == (8, 68, 2)
    result = evaluator.run(state, 0)
    assert np.isfinite(result.scalars['ssim']) and result.scalars['faces'] >= 2
