"""CIAGAN trained on CelebA (paper Sec. IV-A: the second GAN of Fig. 4).

  python tools/prepare_ciagan_faces.py --celeba data/celeba --out data/ciagan_celeba/train_144.npz
  python launch/train.py --config=configs/ciagan_celeba.py --workdir=workdirs/ciagan_celeba
  python launch/train.py --config=configs/ciagan_celeba.py:smoke \
      --workdir=workdirs/ciagan_celeba_smoke
  python tools/model_summary.py --config=configs/ciagan_celeba.py

The paper's settings (the original code's defaults, `source/train.py`): the 128x128 generator
(11.8M parameters) with 1,200 identities (CelebA identities with at least 30 faces, ~40k
faces), batch 16, Adam lr 1e-4, beta (0.5, 0.999) for generator, critic and identity network,
LSGAN, per step 1 identity, 5 critic and 1 generator updates, 100 epochs. The original counts
an epoch as faces / batch loader batches and spends 2 x 5 + 1 + 1 = 12 of them per outer step,
so 100 epochs of 40k faces are 100 * 40,000 / 16 / 12 = 20,833 steps here (one step = one
outer iteration).

Args (`--config=configs/ciagan_celeba.py:smoke,seed=1`):
  smoke: a small CIAGAN at 32x32 on the synthetic WIDER set's faces and identities
    (`make demo` creates the set), CPU-sized.
  tiny: smoke, shrunk to what the tests need (seconds; learns nothing).
  seed: the experiment seed.
  steps: training length in steps (0 = the default).

Sections: data, model, loss, train, optim (generator, discriminator, identity), evals, ckpt,
mesh.
"""

import ml_collections

from safefakes_jax import config_utils

SYNTHETIC = 'cache/synthetic_wider'


def _adam(lr: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name='adam', lr=lr, b1=0.5, b2=0.999, decay_fractions=()))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = config_utils.parse_arg(arg, smoke=False, tiny=False, seed=0, steps=0)
    arg.smoke = arg.smoke or arg.tiny
    config = ml_collections.ConfigDict()
    config.trainer = 'ciagan'
    config.seed = arg.seed
    config.dataset = 'celeba'
    config.resume_with_changed_config = False

    config.data = ml_collections.ConfigDict()
    # 'npz': `CiaganFaces` files (tools/prepare_ciagan_faces.py); 'wider': a WIDER-layout
    # folder with a landmarks sidecar (the synthetic set), faces built in memory.
    config.data.source = 'npz'
    config.data.train = 'data/ciagan_celeba/train_144.npz'
    config.data.val = 'data/ciagan_celeba/val_144.npz'
    config.data.min_face_px = 24  # 'wider' only: narrower faces are left out.
    config.data.batch_size = 16  # Global batch (paper: 16).

    config.model = ml_collections.ConfigDict()
    config.model.num_classes = 1200  # The identity one-hot (paper: 1,200 CelebA identities).
    config.model.resolution = 128
    config.model.width = 1.0  # Generator and critic channel multiplier (1 = the paper's).
    config.model.identity_width = 1.0  # The Siamese ResNet's.
    config.model.compute_dtype = 'float32'

    config.loss = ml_collections.ConfigDict()
    config.loss.margin = 3.0  # Contrastive loss margin.
    config.loss.identity_weight = 1.0  # Generator: LSGAN + 1.0 * identity term.

    config.train = ml_collections.ConfigDict()
    config.train.steps = 20_833  # 100 epochs of ~40k faces (module docstring).
    config.train.identity_steps = 1  # Updates per step (the original's ITER_SIAMESE,
    config.train.critic_steps = 5  # ITER_CRITIC,
    config.train.generator_steps = 1  # ITER_GENERATOR).
    config.train.log_every = 50

    config.optim = ml_collections.ConfigDict()
    config.optim.generator = _adam(1e-4)
    config.optim.discriminator = _adam(1e-4)
    config.optim.identity = _adam(1e-4)

    # Held-out faces: the composite's L1 to the original inside the mask and a grid of
    # landmarks / masked input / composite / target identity's face.
    config.evals = ml_collections.ConfigDict()
    config.evals.val = ml_collections.ConfigDict(
        dict(
            type='ciagan_faces',
            every_steps=2_000,
            final=True,
            num_faces=512,
            batch_size=64,
            grid_faces=8,
        )
    )

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 2_000
    config.ckpt.max_to_keep = 3

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device.

    if arg.smoke:
        config.dataset = 'synthetic'
        config.data.update(source='wider', train=SYNTHETIC, val=SYNTHETIC)
        config.model.update(num_classes=200, resolution=32, width=0.25, identity_width=0.125)
        # One update of each network per step keeps the smoke run CPU-sized.
        config.train.update(steps=1_500, critic_steps=1, log_every=50)
        config.evals.val.update(every_steps=500, num_faces=256)
        config.ckpt.every_steps = 500
    if arg.tiny:
        config.data.batch_size = 8  # Divisible by the tests' 8 fake devices.
        config.model.update(num_classes=200, resolution=16, width=0.0625, identity_width=0.0625)
        config.train.update(steps=2, log_every=1)
        config.evals.val.update(every_steps=0, num_faces=8, batch_size=8, grid_faces=4)
        config.ckpt.every_steps = 0
    if arg.steps:
        config.train.steps = arg.steps
    return config
