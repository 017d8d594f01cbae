r"""Sun2018 training on the shared loop (`loop.py`): its networks, step, input and evaluators.

`train_and_evaluate(config, workdir)` trains `models.sun2018.Generator` (pix2pix U-Net) against
its conditional PatchGAN `Discriminator` on face crops with their 68 landmarks (`config.data`:
an FDF-layout folder or a synthetic `FaceCrops` file; `face_crop_pipeline` with
`landmarks68=True`) with the step of `sun2018_step.py`, one discriminator and one generator
update per batch. Checkpoints, resume, logging, the NaN check and the evaluators
(`config.evals`, e.g. `inpainting`: the generator's `inpaint` method) come from the loop, as for
DeepPrivacy. At the end the generator (its EMA when `config.model.ema_decay` > 0; none by
default) is exported to `<workdir>/generator` for the `sun2018` anonymizer.

  python launch/train.py --config=configs/sun2018_pipa.py:smoke \
      --workdir=workdirs/sun2018_pipa_smoke
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from safefakes_jax import sharding
from safefakes_jax.data import face_crop_pipeline, face_crops
from safefakes_jax.models import sun2018, torch_import
from safefakes_jax.train import loop, optim, sun2018_step
from safefakes_jax.train import state as state_lib

GENERATOR = sun2018_step.GENERATOR
DISCRIMINATOR = sun2018_step.DISCRIMINATOR
BATCH_KEYS = ('image', 'box', 'landmarks68')
EXPORT_DIR = 'generator'  # <workdir>/generator: the generator for the anonymizer.
FORMAT = 'sun2018'  # conversion.json `format` of an export.


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else jnp.float32


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[sun2018.Generator, sun2018.Discriminator]:
    """The generator and discriminator of `config.model`."""
    m = config.model
    kw = dict(width=m.width, resolution=m.resolution, dtype=_dtype(config))
    return (
        sun2018.Generator(dropout=m.dropout, **kw),
        sun2018.Discriminator(use_landmarks=m.d_landmarks, **kw),
    )


def example_inputs(resolution: int, n: int = 1) -> dict[str, jnp.ndarray]:
    """Zero inputs of the networks' shapes (for init and shape checks); no landmarks."""
    return {
        'image': jnp.zeros((n, resolution, resolution, 3), jnp.float32),
        'landmarks68': jnp.full((n, sun2018.NUM_LANDMARKS, 2), jnp.nan, jnp.float32),
    }


def specs(
    config: ml_collections.ConfigDict,
    generator: sun2018.Generator,
    discriminator: sun2018.Discriminator,
) -> dict[str, state_lib.Spec]:
    """The two networks of the train state and their optimisers (EMA: `model.ema_decay`)."""
    x = example_inputs(config.model.resolution)
    steps = int(config.train.steps)
    _, g_tx = optim.build(config.optim.generator, steps)
    _, d_tx = optim.build(config.optim.discriminator, steps)
    return {
        GENERATOR: state_lib.Spec(
            lambda k: generator.init(k, x['image'], x['landmarks68']),
            g_tx,
            float(config.model.ema_decay),
        ),
        DISCRIMINATOR: state_lib.Spec(
            lambda k: discriminator.init(k, x['image'], x['image'], x['landmarks68']), d_tx
        ),
    }


def summary_networks(
    config: ml_collections.ConfigDict,
) -> dict[str, tuple[str, Any, Callable[[], tuple]]]:
    """`tools/model_summary.py`'s networks: name -> (description, module, abstract init args)."""
    g, d = build_models(config)
    r = g.resolution
    x = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_inputs(r).items()}
    return {
        GENERATOR: (
            f'Sun2018 U-Net Generator(width={g.width}) at {r}x{r}',
            g,
            lambda: (jax.random.key(0), x['image'], x['landmarks68']),
        ),
        DISCRIMINATOR: (
            f'Sun2018 PatchGAN Discriminator(width={d.width}, '
            f'use_landmarks={d.use_landmarks}) at {r}x{r}',
            d,
            lambda: (jax.random.key(0), x['image'], x['image'], x['landmarks68']),
        ),
    }


def make_step(config: ml_collections.ConfigDict, generator, discriminator, mesh):
    """The jitted Sun2018 train step with the settings of `config.loss`."""
    loss = config.loss
    return sun2018_step.make_train_step(
        generator,
        discriminator,
        mesh,
        l1_weight=loss.l1_weight,
        gan_loss=loss.gan_loss,
        l1_region=loss.l1_region,
    )


def export_generator(
    config: ml_collections.ConfigDict,
    state: state_lib.TrainState,
    out_dir: str,
    train_faces: int | None = None,
) -> str | None:
    """Writes the generator of `state` where the `sun2018` anonymizer loads it
    (`anonymizer.params=<out_dir>`): orbax params (`{'params': ...}`: the generator has no
    other variables, InstanceNorm keeps no statistics) and `conversion.json` (format `sun2018`,
    width, resolution, step, dataset, the training faces), atomically, replacing an older
    export. It loads with `torch_import.load_converted(out_dir)` ->
    `Generator(width, resolution).apply({'params': params}, condition, landmarks)`.

    Returns:
      `out_dir`, or None in a multi-process run (orbax saves there are collective).
    """
    if jax.process_count() > 1:
        logging.warning('multi-process run: the generator is not exported to %s', out_dir)
        return None
    params = jax.device_get(state.nets[GENERATOR].eval_params)
    info = {
        'format': FORMAT,
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
    """Trains Sun2018 as `config` says and evaluates it (module docstring).

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
                landmarks68=True,
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
