"""Shared base of the DSFD experiments of the paper's Fig. 4 (one config per training set).

Not launched directly: `configs/dsfd_<dataset>.py` calls `get_base_config(arg, dataset)`.
The paper trains DSFD (VGG16) with batch 4, lr 2.5e-4 and 60,000 iterations on an
(anonymized) WIDER FACE train split and tests on the unaltered val split.

Args understood by every `dsfd_*` config (`--config=configs/dsfd_original.py:smoke,seed=1`):
  smoke: tiny run on the synthetic WIDER FACE (`make demo` creates it), CPU-sized.
  seed: the experiment seed.
"""

import os

import ml_collections

from safefakes_jax import config_utils

# Where `make demo` / `tools/make_synthetic_wider.py` put the synthetic WIDER FACE.
SYNTHETIC_ROOT = 'cache/synthetic_wider'
# A real WIDER FACE download (see README, "Real WIDER FACE"); override with the env variable
# or `--config.data.train_root` / `--config.data.val_root`.
WIDER_ROOT = os.environ.get('WIDER_ROOT', 'data/widerface')


def get_base_config(arg: str | None, dataset: str) -> ml_collections.ConfigDict:
    """Returns the config of DSFD trained on `dataset` ('original' or an anonymizer name)."""
    arg = config_utils.parse_arg(arg, smoke=False, seed=0)
    config = ml_collections.ConfigDict()
    config.seed = arg.seed
    config.dataset = dataset

    config.data = ml_collections.ConfigDict()
    real_root = WIDER_ROOT if dataset == 'original' else f'{WIDER_ROOT}_{dataset}'
    synth_root = (SYNTHETIC_ROOT if dataset == 'original'
                  else f'{SYNTHETIC_ROOT}_{dataset}')
    # The (anonymized) training set, and the unaltered set every evaluation uses.
    config.data.train_root = synth_root if arg.smoke else real_root
    config.data.val_root = SYNTHETIC_ROOT if arg.smoke else WIDER_ROOT
    config.data.tfds_dir = ''  # '' = `<root>/../tfds_cache` (see data/tfds_wider.py).
    config.data.image_size = 640
    config.data.max_boxes = 256
    config.data.batch_size = 4  # Global batch (paper: 4).
    config.data.anchor_sampling_prob = 0.4  # Paper: data-anchor-sampling 2/5, SSD crop 3/5.
    config.data.shuffle_buffer = 1000

    config.train = ml_collections.ConfigDict()
    config.train.steps = 60_000  # Paper; 7,500 and 15,000 are its shorter variants.
    config.train.lr = 2.5e-4
    config.train.log_every = 50

    if arg.smoke:
        config.data.image_size = 320
        config.data.max_boxes = 64
        config.data.batch_size = 8
        config.data.shuffle_buffer = 200
        config.train.steps = 200
        config.train.log_every = 10
    return config
