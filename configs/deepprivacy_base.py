"""Shared base of the DeepPrivacy trainings (paper Sec. IV-C: which data, how long).

Not launched directly: `configs/deepprivacy_<data>.py` calls `get_base_config(arg, data)`.
The paper trains DeepPrivacy (the ISVC'19 generator, 46.9M parameters, 128 x 128 faces) with
batch 128 and lr 1.5e-3 on FDF (1.47M faces), on a 100k subset of FDF and on PIPA (38k faces),
for 0.8M to 40M images. Here: the refactored DeepPrivacy's training semantics at the paper's
settings (non-progressive; Adam beta (0, 0.99); the one-sided, box-masked, lazy gradient
penalty, with the discriminator's lr and beta2 adjusted for the lazy penalty; EMA of the
generator, beta = 0.5^(batch / 10,000), used for evaluation and anonymization).

Args understood by every `deepprivacy_*` config
(`--config=configs/deepprivacy_fdf.py:smoke,seed=1`):
  smoke: a small DeepPrivacy on the synthetic face crops (`make demo` creates them), CPU-sized.
  tiny: smoke, shrunk to what the tests need (seconds; learns nothing).
  seed: the experiment seed.
  images: training length in images seen (paper: 40M; its ablations 0.8M, 4M, 10M); the step
    count is images / batch. 0 = the default (40M; smoke: its own).

Sections: data, model, loss, train, optim (generator, discriminator), evals, ckpt, mesh.
"""

import ml_collections

from safefakes_jax import config_utils

SYNTHETIC_CROPS = 'cache/synthetic_wider/face_crops'
# FDF in the refactored DeepPrivacy layout ({train,val}/images/128/*.png, landmarks.npy,
# bounding_box/128.npy or .torch); PIPA face crops prepared in the same layout.
DATA_ROOTS = {'fdf': 'data/fdf', 'fdf100k': 'data/fdf', 'pipa': 'data/pipa_fdf'}
LIMITS = {'fdf': 0, 'fdf100k': 100_000, 'pipa': 0}  # 0 = every face.


def get_base_config(arg: str | None, data: str) -> ml_collections.ConfigDict:
    """Returns the config of DeepPrivacy trained on `data` ('fdf', 'fdf100k' or 'pipa')."""
    arg = config_utils.parse_arg(arg, smoke=False, tiny=False, seed=0, images=0)
    arg.smoke = arg.smoke or arg.tiny
    config = ml_collections.ConfigDict()
    config.trainer = 'deepprivacy'
    config.seed = arg.seed
    config.dataset = data
    config.resume_with_changed_config = False  # As in the DSFD configs (train/checkpoints.py).

    config.data = ml_collections.ConfigDict()
    # 'fdf': a folder in the FDF layout (`data/face_crops.py`, `read_fdf`); 'npz': a
    # `FaceCrops` file per split (the synthetic crops of tools/make_synthetic_wider.py --crops).
    config.data.source = 'fdf'
    config.data.train = DATA_ROOTS[data]
    config.data.val = DATA_ROOTS[data]
    config.data.limit = LIMITS[data]  # A seeded random subset of the train faces; 0 = all.
    config.data.batch_size = 128  # Global batch (paper: 128).
    config.data.flip = True  # Without swapping the left / right keypoints, as the original.
    config.data.box_jitter = 0.02  # DeepPrivacy-v1: +-2% of the box size per edge.

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier; 1.0 = the paper's 512-channel network.
    config.model.resolution = 128
    # 'v2': the refactored code's discriminator (image, condition, mask: 47,150,530
    # parameters); 'v1': the ISVC'19 one (image, condition: 45,526,361).
    config.model.discriminator = 'v2'
    config.model.compute_dtype = 'float32'  # Or 'bfloat16' (params stay float32).
    config.model.ema_decay = 0.0  # 0 = DeepPrivacy's 0.5^(batch / 10,000).

    config.loss = ml_collections.ConfigDict()
    config.loss.gp = 'v2'  # 'v2': one-sided, box-masked, lazy; 'v1': two-sided, every step.
    config.loss.gp_weight = 10.0
    config.loss.eps_weight = 0.001  # The epsilon penalty on D(real)^2.
    config.loss.lazy_every = 16  # v2: the penalty every 16 steps, scaled by 16.

    config.train = ml_collections.ConfigDict()
    config.train.steps = 40_000_000 // config.data.batch_size  # 40M images (paper).
    config.train.log_every = 100

    lazy = config.loss.lazy_every
    config.optim = ml_collections.ConfigDict()
    config.optim.generator = ml_collections.ConfigDict(
        dict(name='adam', lr=1.5e-3, b1=0.0, b2=0.99, decay_fractions=())
    )
    # The lazy penalty's adjustment (StyleGAN2, as the refactored DeepPrivacy): lr * c and
    # beta2^c with c = lazy / (lazy + 1).
    c = lazy / (lazy + 1)
    config.optim.discriminator = ml_collections.ConfigDict(
        dict(name='adam', lr=1.5e-3 * c, b1=0.0, b2=0.99**c, decay_fractions=())
    )

    # Held-out crops: L1 of the EMA generator's output (z = 0) to the original and a grid of
    # condition / keypoints / generated / real, every `every_steps` and at the end.
    config.evals = ml_collections.ConfigDict()
    config.evals.val = ml_collections.ConfigDict(
        dict(
            type='inpainting',
            every_steps=10_000,
            final=True,
            num_faces=1024,
            batch_size=64,
            grid_faces=8,
        )
    )

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 10_000
    config.ckpt.max_to_keep = 3

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device.

    if arg.smoke:
        # A 1/16-width DeepPrivacy at 32 x 32 on the synthetic face crops, sized to train in
        # about 10 minutes on 2 CPU cores (~0.5 s a step; 1/8 width at 64 x 64 takes 8 s).
        config.data.update(
            source='npz',
            train=f'{SYNTHETIC_CROPS}/train_128.npz',
            val=f'{SYNTHETIC_CROPS}/val_128.npz',
            limit=0,
            batch_size=16,
        )
        config.model.update(width=0.0625, resolution=32)
        config.train.update(steps=1_200, log_every=50)
        # The refactored code's lazy, box-masked penalty lets the small critic run away here
        # (D(real) - D(fake) > 400 by step 400); v1's penalty on the whole image, every step,
        # keeps it bounded.
        config.loss.update(gp='v1', lazy_every=1)
        config.optim.discriminator.update(lr=1.5e-3, b2=0.99)
        config.evals.val.update(every_steps=400, num_faces=256, batch_size=64)
        config.ckpt.every_steps = 400
    if arg.tiny:
        config.data.batch_size = 8  # Divisible by the tests' 8 fake devices.
        config.model.update(width=0.03125, resolution=16)
        config.train.update(steps=2, log_every=1)
        config.evals.val.update(every_steps=0, num_faces=8, batch_size=4, grid_faces=4)
        config.ckpt.every_steps = 0
    if arg.images:
        config.train.steps = max(1, arg.images // config.data.batch_size)
    return config
