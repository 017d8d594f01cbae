"""Shared base of the DSFD experiments of the paper's Fig. 4 (one config per training set).

Not launched directly: `configs/dsfd_<dataset>.py` calls `get_base_config(arg, dataset)`.
The paper trains DSFD (VGG16) with batch 4, lr 2.5e-4 and 60,000 iterations on an
(anonymized) WIDER FACE train split and tests on the unaltered val split.

Args understood by every `dsfd_*` config (`--config=configs/dsfd_original.py:smoke,seed=1`):
  smoke: tiny run on the synthetic WIDER FACE (`make demo` creates it), CPU-sized.
  seed: the experiment seed.
  steps: training iterations (paper 60,000; its shorter variants 7,500 and 15,000); the lr
    decay points (40k / 50k of 60k) scale with it. 0 = the default (60,000; 200 for smoke).
  paper: the paper's DSFD options (tall 1.5 anchors, match IoU 0.4) instead of the yx
    reference implementation's (square anchors, 0.35).

Sections: data, model, train (optimiser + schedule), evals, ckpt, mesh.
"""

import os

import ml_collections

from safefakes_jax import config_utils

# Where `make demo` / `tools/make_synthetic_wider.py` put the synthetic WIDER FACE.
SYNTHETIC_ROOT = 'cache/synthetic_wider'
# A real WIDER FACE download (see README, "Real WIDER FACE"); override with the env variable
# or `--config.data.train_root` / `--config.data.val_root`.
WIDER_ROOT = os.environ.get('WIDER_ROOT', 'data/widerface')
# Training sets of the paper: conventional methods (anonymizer exists) and GANs.
CONVENTIONAL = ('blur', 'blackout', 'pixelate', 'fullblur')
GANS = ('deepprivacy', 'ciagan', 'sun2018')


def get_base_config(arg: str | None, dataset: str) -> ml_collections.ConfigDict:
    """Returns the config of DSFD trained on `dataset` ('original' or an anonymizer name)."""
    arg = config_utils.parse_arg(arg, smoke=False, seed=0, steps=0, paper=False)
    config = ml_collections.ConfigDict()
    config.seed = arg.seed
    config.dataset = dataset

    config.data = ml_collections.ConfigDict()
    original = SYNTHETIC_ROOT if arg.smoke else WIDER_ROOT
    # The unanonymized source of the training set (anonymized sets live at `<source>_<name>`).
    config.data.original_train_root = original
    # The (anonymized) training set, and the unaltered set every evaluation uses.
    config.data.train_root = original if dataset == 'original' else f'{original}_{dataset}'
    config.data.val_root = original
    config.data.tfds_dir = ''  # '' = `<root>/../tfds_cache` (see data/tfds_wider.py).
    config.data.image_size = 640
    config.data.max_boxes = 256
    config.data.batch_size = 4  # Global batch (paper: 4).
    config.data.anchor_sampling_prob = 0.4  # Paper: data-anchor-sampling 2/5, SSD crop 3/5.
    config.data.shuffle_buffer = 1000

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier of DSFD (VGG16); 1.0 = the paper's model.
    config.model.compute_dtype = 'float32'  # Or 'bfloat16' (params stay float32).
    config.model.anchor_aspect_ratio = 1.5 if arg.paper else 1.0  # Height / width.
    config.model.match_threshold = 0.4 if arg.paper else 0.35
    config.model.pal_weight = 1.0  # Weight of the first shot's loss (PAL; yx: 1).
    config.model.neg_pos_ratio = 3

    config.train = ml_collections.ConfigDict()
    config.train.steps = 60_000  # Paper; 7,500 and 15,000 are its shorter variants.
    config.train.lr = 2.5e-4
    config.train.momentum = 0.9
    config.train.weight_decay = 5e-4
    config.train.decay_fractions = (40_000 / 60_000, 50_000 / 60_000)  # x0.1 at 40k, 50k.
    config.train.log_every = 50

    config.evals = ml_collections.ConfigDict()
    config.evals.every_steps = 5_000  # 0 = only at the end.
    config.evals.image_size = 640  # Single-scale, letterboxed.
    config.evals.batch_size = 8
    config.evals.max_batches = 0  # 0 = the whole val split.
    config.evals.conf_thresh = 0.05

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 5_000
    config.ckpt.max_to_keep = 3

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device.

    if arg.smoke:
        config.model.width = 0.25
        config.data.image_size = 320
        config.data.max_boxes = 64
        config.data.batch_size = 8
        config.data.shuffle_buffer = 200
        config.train.steps = 200
        config.train.log_every = 10
        config.evals.every_steps = 100
        config.evals.image_size = 320
        config.ckpt.every_steps = 100
    if arg.steps:
        config.train.steps = arg.steps
    return config
