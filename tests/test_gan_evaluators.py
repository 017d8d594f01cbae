"""The metric evaluators a GAN trainer can list in `config.evals` (`ssim`, `lpips`, `identity`,
`fid`) on the `:tiny` DeepPrivacy with random weights: finite values in range, the face count,
and FID without its weights a clear error when built."""

import jax
import numpy as np
import pytest

from safefakes_jax import sharding
from safefakes_jax.evaluation import evaluators, fid
from safefakes_jax.train import deepprivacy_trainer
from safefakes_jax.train import state as state_lib
from tests.test_train_deepprivacy import crops, tiny_config  # noqa: F401 (the fixture)


@pytest.fixture(scope='module')
def setup(crops):  # noqa: F811
    config = tiny_config(crops)
    config.model.resolution = 32  # LPIPS-alex needs 23 px; the crops are 32 px.
    mesh = sharding.make_mesh()
    g, d = deepprivacy_trainer.build_models(config)
    state = state_lib.create(deepprivacy_trainer.specs(config, g, d), jax.random.key(0), mesh)
    context = evaluators.Context(config, {'generator': g, 'discriminator': d}, mesh)
    return context, state


@pytest.mark.slow  # ~40 s on 2 cores (dlib, AlexNet); make test-all.
@pytest.mark.parametrize(
    'kind, keys',
    [
        ('ssim', {'ssim'}),
        ('lpips', {'lpips'}),
        ('identity', {'mean_distance', 'match_rate', 'rank1', 'rank5', 'fid_dlib'}),
    ],
)
def test_metric_evaluators(setup, kind, keys):
    context, state = setup
    evaluator = evaluators.build_one('m', {'type': kind, 'num_faces': 12, 'batch_size': 8}, context)
    result = evaluator.run(state, 0)
    assert set(result.scalars) == keys | {'faces'}
    assert result.scalars['faces'] == evaluator.num_faces >= 2  # The tiny val split's faces.
    assert all(np.isfinite(v) for v in result.scalars.values()), result.scalars
    if kind == 'ssim':
        assert -1 <= result.scalars['ssim'] < 1  # Random weights: the box is not the real face.
    if kind == 'identity':
        assert 0 <= result.scalars['rank1'] <= result.scalars['rank5'] <= 1


def test_fid_evaluator_without_weights_is_an_error_naming_the_import(setup, tmp_path):
    context, _ = setup
    with pytest.raises(fid.FIDUnavailableError, match='--format=fid_inception'):
        evaluators.build_one('f', {'type': 'fid', 'weights': str(tmp_path)}, context)
    with pytest.raises(ValueError, match='unknown keys'):
        evaluators.build_one('s', {'type': 'ssim', 'colour': 1}, context)
