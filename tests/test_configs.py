"""Tests for config parsing and for every experiment config in configs/."""

import glob
import importlib
import os

import ml_collections
import pytest

from safefakes_jax import config_utils

CONFIG_FILES = sorted(
    f
    for f in glob.glob(os.path.join(os.path.dirname(__file__), '..', 'configs', '*.py'))
    if not os.path.basename(f).startswith('_') and not f.endswith('_base.py')
)


def test_parse_arg_types():
    arg = config_utils.parse_arg(
        'smoke, steps=20,lr=0.5,name=abc,flag=false',
        smoke=False,
        steps=1,
        lr=1.0,
        name='',
        flag=True,
        other=None,
    )
    assert arg.smoke is True
    assert arg.steps == 20 and isinstance(arg.steps, int)
    assert arg.lr == 0.5
    assert arg.name == 'abc'
    assert arg.flag is False
    assert arg.other is None
    assert config_utils.parse_arg(None, smoke=False).smoke is False
    assert config_utils.parse_arg('', smoke=False).smoke is False


@pytest.mark.parametrize(
    'arg, match',
    [
        ('bogus', 'unknown config arg'),
        ('steps', 'needs a value'),
        ('steps=abc', 'expected int'),
        ('smoke=maybe', 'expected a boolean'),
    ],
)
def test_parse_arg_errors(arg, match):
    with pytest.raises(ValueError, match=match):
        config_utils.parse_arg(arg, smoke=False, steps=1)


def test_there_are_configs():
    assert any(f.endswith('dsfd_original.py') for f in CONFIG_FILES)


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_file(path):
    name = os.path.splitext(os.path.basename(path))[0]
    module = importlib.import_module(f'configs.{name}')
    assert f'--config=configs/{name}.py' in module.__doc__  # Shows its launch command.
    full = module.get_config()
    smoke = module.get_config('smoke')
    assert isinstance(full, ml_collections.ConfigDict)
    assert smoke.train.steps < full.train.steps
    if full.get('trainer', 'detector') == 'detector':
        assert smoke.data.image_size <= full.data.image_size
        assert 'synthetic' in smoke.data.train_root and 'synthetic' in smoke.data.val_root
    else:  # A GAN on face crops.
        assert smoke.model.resolution <= full.model.resolution
        assert smoke.model.width < full.model.width
        assert 'synthetic' in smoke.data.train and 'synthetic' in smoke.data.val
    assert module.get_config('smoke,seed=3').seed == 3
    with pytest.raises(ValueError):
        module.get_config('no_such_arg')


def test_deepprivacy_paper_settings():
    from configs import deepprivacy_fdf, deepprivacy_fdf100k

    config = deepprivacy_fdf.get_config()
    assert (config.data.batch_size, config.optim.generator.lr) == (128, 1.5e-3)
    assert (config.optim.generator.b1, config.optim.generator.b2) == (0.0, 0.99)
    assert config.train.steps * 128 == 40_000_000
    assert deepprivacy_fdf.get_config('images=800000').train.steps == 6250
    assert deepprivacy_fdf100k.get_config().data.limit == 100_000
    assert config.model.width == 1.0 and config.model.resolution == 128


def test_paper_settings():
    from configs import dsfd_original

    config = dsfd_original.get_config()
    assert (config.data.batch_size, config.optim.detector.lr, config.train.steps) == (
        4,
        2.5e-4,
        60_000,
    )
    assert config.data.anchor_sampling_prob == pytest.approx(0.4)
