"""DeepPrivacy training on the shared loop (`loop.py`): its networks, step, input and evaluators.

`train_and_evaluate(config, workdir)` trains `models.deepprivacy.Generator` (with an EMA copy)
against its conditional `Discriminator` (`config.model.discriminator`: 'v2' or 'v1') on face
crops (`config.data`: an FDF-layout folder or a synthetic `FaceCrops` file) with the step of
`deepprivacy_step.py`, one discriminator and one generator update per batch. Checkpoints,
resume, logging, the NaN check and the evaluators (`config.evals`, e.g. `inpainting`) come
from the loop. The EMA generator is what evaluation and the `deepprivacy` anonymizer use.

  python launch/train.py --config=configs/deepprivacy_fdf.py:smoke --workdir=/tmp/dp_smoke
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from safefakes_jax import sharding
from safefakes_jax.data import face_crop_pipeline, face_crops
from safefakes_jax.models import deepprivacy, torch_import
from safefakes_jax.train import deepprivacy_step, loop, optim
from safefakes_jax.train import state as state_lib

GENERATOR = deepprivacy_step.GENERATOR
DISCRIMINATOR = deepprivacy_step.DISCRIMINATOR
BATCH_KEYS = ('image', 'box', 'keypoints')
EXPORT_DIR = 'generator'  # <workdir>/generator: the EMA generator for the anonymizer.


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else jnp.float32


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[deepprivacy.Generator, deepprivacy.Discriminator]:
    """The generator and discriminator of `config.model`."""
    m = config.model
    kw = dict(width=m.width, resolution=m.resolution, dtype=_dtype(config))
    return deepprivacy.Generator(**kw), deepprivacy.Discriminator(variant=m.discriminator, **kw)


def ema_decay(config: ml_collections.ConfigDict) -> float:
    """`config.model.ema_decay`, or DeepPrivacy's 0.5^(batch / 10,000) when it is 0."""
    return float(config.model.ema_decay or 0.5 ** (config.data.batch_size / 10_000))


def example_inputs(resolution: int, n: int = 1) -> dict[str, jnp.ndarray]:
    """Zero inputs of the networks' shapes (for init and shape checks)."""
    return {
        'image': jnp.zeros((n, resolution, resolution, 3), jnp.float32),
        'keypoints': jnp.full((n, 7, 2), jnp.nan, jnp.float32),
        'z': jnp.zeros((n, *deepprivacy_step.Z_SHAPE), jnp.float32),
        'mask': jnp.zeros((n, resolution, resolution, 1), jnp.float32),
    }


def specs(
    config: ml_collections.ConfigDict,
    generator: deepprivacy.Generator,
    discriminator: deepprivacy.Discriminator,
) -> dict[str, state_lib.Spec]:
    """The two networks of the train state, their optimisers and the generator's EMA."""
    x = example_inputs(config.model.resolution)
    steps = int(config.train.steps)
    _, g_tx = optim.build(config.optim.generator, steps)
    _, d_tx = optim.build(config.optim.discriminator, steps)
    d_args = (x['image'], x['image'], x['keypoints'])
    if config.model.discriminator == 'v2':
        d_args += (x['mask'],)
    return {
        GENERATOR: state_lib.Spec(
            lambda k: generator.init(k, x['image'], x['keypoints'], x['z']), g_tx, ema_decay(config)
        ),
        DISCRIMINATOR: state_lib.Spec(lambda k: discriminator.init(k, *d_args), d_tx),
    }


def make_step(config: ml_collections.ConfigDict, generator, discriminator, mesh):
    """The jitted DeepPrivacy train step with the settings of `config.loss`."""
    loss = config.loss
    return deepprivacy_step.make_train_step(
        generator,
        discriminator,
        mesh,
        gp=loss.gp,
        gp_weight=loss.gp_weight,
        eps_weight=loss.eps_weight,
        lazy_every=loss.lazy_every,
    )


def export_generator(
    config: ml_collections.ConfigDict,
    state: state_lib.TrainState,
    out_dir: str,
    train_faces: int | None = None,
) -> str | None:
    """Writes the EMA generator of `state` where the `deepprivacy` anonymizer loads it
    (`anonymizer.params=<out_dir>`): orbax params and `conversion.json` (format
    `deepprivacy`, width, resolution, step, dataset, the training faces), atomically,
    replacing an older export.

    Returns:
      `out_dir`, or None in a multi-process run (orbax saves there are collective; export
      from a single-process run resumed on the workdir instead).
    """
    if jax.process_count() > 1:
        logging.warning('multi-process run: the generator is not exported to %s', out_dir)
        return None
    params = jax.device_get(state.nets[GENERATOR].eval_params)
    info = {
        'format': 'deepprivacy',
        'width': float(config.model.width),
        'resolution': int(config.model.resolution),
        'step': int(jax.device_get(state.step)),
        'dataset': config.dataset,
        **({'train_faces': int(train_faces)} if train_faces is not None else {}),
    }
    torch_import.save_converted(out_dir, params, info, force=True)
    return out_dir


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains DeepPrivacy as `config` says and evaluates it (module docstring).

    Returns:
      What `loop.run` returns (`steps`, `history`, the evaluators' results).

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds a run of another config.
      FileNotFoundError, ValueError: missing or bad face crops, a bad config.
    """
    if config.data.batch_size % jax.process_count():
        raise ValueError(
            f'config.data.batch_size {config.data.batch_size} is not divisible by the '
            f'{jax.process_count()} processes'
        )
    d = config.data
    train_crops = face_crops.load_split(d.source, d.train, 'train', limit=d.limit)

    def make_task(mesh) -> loop.Task:
        generator, discriminator = build_models(config)
        step = make_step(config, generator, discriminator, mesh)

        def batches(position: int):
            ds = face_crop_pipeline.make_gan_dataset(
                train_crops,
                batch_size=config.data.batch_size // jax.process_count(),
                resolution=config.model.resolution,
                seed=config.seed,
                train=True,
                start_position=position,
                flip=config.data.flip,
                box_jitter=config.data.box_jitter,
            )
            return face_crop_pipeline.as_numpy_batches(ds)

        def export(state: state_lib.TrainState) -> str | None:
            out = os.path.join(workdir, EXPORT_DIR)
            return export_generator(config, state, out, len(train_crops))

        return loop.Task(
            specs=specs(config, generator, discriminator),
            models={GENERATOR: generator, DISCRIMINATOR: discriminator},
            train_step=step,
            batches=batches,
            shard=lambda b: sharding.shard_batch(b, mesh, BATCH_KEYS),
            finite_keys=('d_loss', 'g_loss'),
            batch_size=int(config.data.batch_size),
            hparams={'data.train_faces': len(train_crops)},
            results={'train_faces': len(train_crops)},
            names_key='position',
            export=export,
        )

    return loop.run(config, workdir, make_task, stop_after=stop_after)
