"""Shared base of the DSFD experiments of the paper's Fig. 4 (one config per training set).

Not launched directly: `configs/dsfd_<dataset>.py` calls `get_base_config(arg, dataset)`.
The paper trains DSFD (VGG16) with batch 4, lr 2.5e-4 and 60,000 iterations on an
(anonymized) WIDER FACE train split and tests on the unaltered val split.

Args understood by every `dsfd_*` config (`--config=configs/dsfd_original.py:smoke,seed=1`):
  smoke: tiny run on the synthetic WIDER FACE (`make demo` creates it), CPU-sized.
  tiny: smoke, shrunk to what the tests need (seconds; learns nothing).
  seed: the experiment seed.
  steps: training iterations (paper 60,000; its shorter variants 7,500 and 15,000); the lr
    decay points (40k / 50k of 60k) scale with it. 0 = the default (60,000; 500 for smoke).
  paper: the paper's DSFD options (tall 1.5 anchors, match IoU 0.4) instead of the yx
    reference implementation's (square anchors, 0.35).

Sections: data, model, train (steps, logging), optim (one optimiser per network), evals (by
name), ckpt, mesh.
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
    arg = config_utils.parse_arg(arg, smoke=False, tiny=False, seed=0, steps=0, paper=False)
    arg.smoke = arg.smoke or arg.tiny
    config = ml_collections.ConfigDict()
    config.seed = arg.seed
    config.dataset = dataset
    # A workdir whose config.json differs from this config is refused (train/checkpoints.py,
    # `check_workdir`); True continues that run with this config and records the changed keys
    # in <workdir>/config_changes.json. Never compared itself.
    config.resume_with_changed_config = False

    config.data = ml_collections.ConfigDict()
    original = SYNTHETIC_ROOT if arg.smoke else WIDER_ROOT
    # The unanonymized source of the training set (anonymized sets live at `<source>_<name>`).
    config.data.original_train_root = original
    # The (anonymized) training set, and the unaltered set every evaluation uses.
    config.data.train_root = original if dataset == 'original' else f'{original}_{dataset}'
    config.data.val_root = original
    # Where the TFDS records of the folders go; '' = $SAFEFAKES_TFDS_DIR, else
    # $XDG_CACHE_HOME/safefakes_jax/tfds or ~/.cache/safefakes_jax/tfds (data/tfds_wider.py).
    config.data.tfds_dir = ''
    config.data.image_size = 640
    config.data.max_boxes = 256
    config.data.batch_size = 4  # Global batch (paper: 4).
    config.data.anchor_sampling_prob = 0.4  # Paper: data-anchor-sampling 2/5, SSD crop 3/5.
    config.data.shuffle_buffer = 1000

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier of DSFD (VGG16); 1.0 = the paper's model.
    config.model.compute_dtype = 'float32'  # Or 'bfloat16' (params stay float32).
    # A converted checkpoint (tools/convert_torch_weights.py) to start from: a full DSFD
    # (`dsfd_vgg`) or the VGG16 backbone (`vgg16_reducedfc`, the paper's ImageNet init).
    # '' = train from scratch (the init of models/dsfd.py).
    config.model.init_from = ''
    config.model.anchor_aspect_ratio = 1.5 if arg.paper else 1.0  # Height / width.
    config.model.match_threshold = 0.4 if arg.paper else 0.35
    config.model.pal_weight = 1.0  # Weight of the first shot's loss (PAL; yx: 1).
    config.model.neg_pos_ratio = 3

    config.train = ml_collections.ConfigDict()
    config.train.steps = 60_000  # Paper; 7,500 and 15,000 are its shorter variants.
    config.train.log_every = 50

    # One optimiser section per network (train/optim.py). The paper's SGD with coupled weight
    # decay, x0.1 at 40k and 50k of 60k (the points scale with train.steps); beyond the paper:
    # 'adam', a linear warm-up, global-norm clipping.
    config.optim = ml_collections.ConfigDict()
    config.optim.detector = ml_collections.ConfigDict(
        dict(
            name='sgd',
            lr=2.5e-4,
            momentum=0.9,
            weight_decay=5e-4,
            decay_fractions=(40_000 / 60_000, 50_000 / 60_000),
            warmup_steps=0,
            clip_norm=0.0,
        )
    )  # clip_norm 0 = no clipping.

    # Evaluations by name (evaluation/evaluators/<type>.py), on the unaltered val split. `val`:
    # single-scale (letterboxed to image_size) every `every_steps` (0 = never), with a grid of
    # `grid_images` val images and their detections in the summaries. `final`: at the end of
    # training, the test-time procedure of the reported AP (evaluation/detector_eval.py):
    # 'multiscale' (the reference's multi-scale + flip + box voting, each image at its own
    # size; multiscale_max_side > 0 caps the passes' longer side) or 'single'; it writes the
    # official prediction folder <workdir>/predictions/.
    config.evals = ml_collections.ConfigDict()
    config.evals.val = ml_collections.ConfigDict(
        dict(
            type='wider_ap',
            every_steps=5_000,
            procedure='single',
            image_size=640,
            batch_size=8,
            max_batches=0,
            conf_thresh=0.05,
            grid_images=8,
        )
    )
    config.evals.final = ml_collections.ConfigDict(
        dict(
            type='wider_ap',
            every_steps=0,
            final=True,
            procedure='multiscale',
            image_size=640,
            batch_size=8,
            max_batches=0,
            conf_thresh=0.05,
            grid_images=8,
            multiscale_max_side=0,
            write_predictions=True,
        )
    )

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 5_000
    config.ckpt.max_to_keep = 3

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device.

    if arg.smoke:
        # DSFD at 1/8 width from scratch on 256 px crops: on 2 CPU cores it reaches an easy AP
        # above 0.6 on the synthetic val split in a few minutes (README, "The DSFD detector").
        # No pretrained backbone, so Adam with a warm-up and clipping (the first gradients of
        # the un-normalised VGG are ~1e8) instead of the paper's SGD, and a later decay.
        config.model.width = 0.125
        config.data.image_size = 256
        config.data.max_boxes = 64
        config.data.batch_size = 8
        config.data.shuffle_buffer = 200
        config.train.steps = 500
        config.train.log_every = 20
        config.optim.detector.update(
            name='adam',
            b1=0.9,
            lr=1e-3,
            warmup_steps=20,
            clip_norm=100.0,
            decay_fractions=(0.8, 0.95),
        )
        del config.optim.detector['momentum']
        config.evals.val.update(every_steps=250, image_size=320)
        config.evals.final.update(procedure='single', image_size=320)  # Minutes on a CPU.
        config.ckpt.every_steps = 250
    if arg.tiny:
        # The tests' size: DSFD at 1/16 width on 64 px images, 2 steps, no periodic
        # evaluation or checkpoint (seconds once compiled; learns nothing).
        config.model.width = 0.0625
        config.data.update(image_size=64, max_boxes=16, batch_size=8, shuffle_buffer=4)
        config.train.update(steps=2, log_every=1)
        config.evals.val.update(every_steps=0, image_size=64)
        config.evals.final.update(image_size=64)
        config.ckpt.every_steps = 0
    if arg.steps:
        config.train.steps = arg.steps
    return config
