r"""Sun2018 (head inpainting, stage 2) trained on PIPA face crops with dlib landmarks (Sec. IV-A).

  python launch/train.py --config=configs/sun2018_pipa.py --workdir=workdirs/sun2018_pipa
  python launch/train.py --config=configs/sun2018_pipa.py:smoke \
      --workdir=workdirs/sun2018_pipa_smoke
  python tools/model_summary.py --config=configs/sun2018_pipa.py

The paper reimplements Sun2018 at 128 x 128 with black-out input, the 68 dlib landmarks of the
original face, a U-Net generator with skips and a conditional discriminator, batch 64, lr 5e-4
(generator) and 2e-5 (discriminator), on the ~16k PIPA train + val faces where dlib finds
landmarks. Here: `models/sun2018.py` (pix2pix U-Net + PatchGAN, every choice listed there) with
`train/sun2018_step.py` (pix2pix's vanilla GAN loss + 100 x L1, the box weighted twice). The
smoke run exports `<workdir>/generator`, which `configs/anonymize/sun2018.py:smoke` uses.

PIPA crops go in the FDF layout at `data/pipa_fdf` (as configs/deepprivacy_pipa.py); note that
`fdf.read_fdf` has no 68 landmarks (NaN: empty maps), so a PIPA set for Sun2018 needs them
another way (e.g. a `FaceCrops` .npz with `landmarks68`, `config.data.source='npz'`).

Args (`--config=configs/sun2018_pipa.py:smoke,seed=1`):
  smoke: a 1/4-width Sun2018 at 32 x 32 on the synthetic face crops (`make demo` or
    `make cache/synthetic_wider/synthetic_info.json` creates them), ~8 min on 2 CPU cores.
  tiny: smoke, shrunk to what the tests need (seconds; learns nothing).
  seed: the experiment seed.
  steps: training steps (0 = the default: 200 epochs of 16k faces at batch 64).
"""

import ml_collections

from safefakes_jax import config_utils

SYNTHETIC_CROPS = 'cache/synthetic_wider/face_crops'
PIPA_ROOT = 'data/pipa_fdf'
PAPER_FACES = 16_000  # PIPA faces with dlib landmarks (paper Sec. IV-B).


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the Sun2018 config (module docstring)."""
    arg = config_utils.parse_arg(arg, smoke=False, tiny=False, seed=0, steps=0)
    arg.smoke = arg.smoke or arg.tiny
    config = ml_collections.ConfigDict()
    config.trainer = 'sun2018'
    config.seed = arg.seed
    config.dataset = 'pipa'
    config.resume_with_changed_config = False  # As in the other configs (train/checkpoints.py).

    config.data = ml_collections.ConfigDict()
    # 'fdf': a folder in the FDF layout; 'npz': a `FaceCrops` file per split (synthetic).
    config.data.source = 'fdf'
    config.data.train = PIPA_ROOT
    config.data.val = PIPA_ROOT
    config.data.limit = 0  # A seeded random subset of the train faces; 0 = all.
    config.data.batch_size = 64  # Global batch (paper: 64).
    config.data.flip = True  # Mirrors the landmarks and swaps their left / right indices.
    config.data.box_jitter = 0.0  # DeepPrivacy-v1's jitter; Sun2018 has none.

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier; 1.0 = ngf 64 (41.9M parameters).
    config.model.resolution = 128  # Paper: 128 (Sun2018 itself: 256).
    config.model.dropout = 0.5  # pix2pix's decoder dropout (training only).
    config.model.d_landmarks = True  # The discriminator also sees the landmark maps.
    config.model.compute_dtype = 'float32'  # Or 'bfloat16' (params stay float32).
    config.model.ema_decay = 0.0  # 0 = no EMA (pix2pix has none).

    config.loss = ml_collections.ConfigDict()
    config.loss.gan_loss = 'vanilla'  # pix2pix's BCE on logits; or 'lsgan'.
    config.loss.l1_weight = 100.0  # pix2pix's lambda (Sun2018's is unknown).
    config.loss.l1_region = 'weighted'  # Box pixels twice (PG2's mask L1); 'box'; 'crop'.

    config.train = ml_collections.ConfigDict()
    # Not in the paper: 200 epochs (pix2pix's usual length) of the 16k faces at batch 64.
    config.train.steps = 200 * PAPER_FACES // config.data.batch_size
    config.train.log_every = 100

    # Paper: lr 5e-4 (G) and 2e-5 (D); pix2pix's Adam betas (0.5, 0.999), constant rate.
    config.optim = ml_collections.ConfigDict()
    config.optim.generator = ml_collections.ConfigDict(
        dict(name='adam', lr=5e-4, b1=0.5, b2=0.999, decay_fractions=())
    )
    config.optim.discriminator = ml_collections.ConfigDict(
        dict(name='adam', lr=2e-5, b1=0.5, b2=0.999, decay_fractions=())
    )

    # Held-out crops: L1 of the generator's output to the original (whole crop and box) and a
    # grid of condition / landmarks / generated / real, every `every_steps` and at the end.
    config.evals = ml_collections.ConfigDict()
    config.evals.val = ml_collections.ConfigDict(
        dict(
            type='inpainting',
            every_steps=5_000,
            final=True,
            num_faces=1024,
            batch_size=64,
            grid_faces=8,
        )
    )

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 5_000
    config.ckpt.max_to_keep = 3

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device.

    if arg.smoke:
        # A 1/4-width Sun2018 at 32 x 32 on the synthetic crops (with exact landmarks), sized
        # to train in about 8 minutes on 2 CPU cores (~0.2 s a step; 1/8 width: 0.08 s).
        config.dataset = 'synthetic'
        config.data.update(
            source='npz',
            train=f'{SYNTHETIC_CROPS}/train_128.npz',
            val=f'{SYNTHETIC_CROPS}/val_128.npz',
            limit=0,
            batch_size=16,
        )
        config.model.update(width=0.25, resolution=32)
        config.train.update(steps=2_000, log_every=50)
        config.evals.val.update(every_steps=500, num_faces=256, batch_size=64)
        config.ckpt.every_steps = 500
    if arg.tiny:
        config.data.batch_size = 8  # Divisible by the tests' 8 fake devices.
        config.model.update(width=0.0625, resolution=32)
        config.train.update(steps=2, log_every=1)
        config.evals.val.update(every_steps=0, num_faces=8, batch_size=4, grid_faces=4)
        config.ckpt.every_steps = 0
    if arg.steps:
        config.train.steps = int(arg.steps)
    return config
