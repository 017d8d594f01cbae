"""What the GAN trainers share: the generator export and the face-crop training task.

* `export_generator`: writes a trained generator where its anonymizer loads it
  (`anonymizer.params=<workdir>/generator`): orbax variables and `conversion.json` (`format`,
  the network's size, `step`, `dataset`, `train_faces`), atomically, replacing an older export.
* `train_on_face_crops`: DeepPrivacy's and Sun2018's `train_and_evaluate`: face crops
  (`config.data`: an FDF-layout folder or a synthetic `FaceCrops` file) through
  `face_crop_pipeline` into a two-network step (generator, discriminator), on `loop.run`, the
  generator exported at the end. CIAGAN trains on face pairs (`ciagan_trainer`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
from absl import logging

from safefakes_jax import sharding
from safefakes_jax.data import face_crop_pipeline, face_crops
from safefakes_jax.models import torch_import
from safefakes_jax.train import loop
from safefakes_jax.train import state as state_lib

GENERATOR = 'generator'
DISCRIMINATOR = 'discriminator'
EXPORT_DIR = 'generator'  # <workdir>/generator: what the anonymizer loads.


def check_batch(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError when `config.data.batch_size` does not split over the processes."""
    if config.data.batch_size % jax.process_count():
        raise ValueError(
            f'config.data.batch_size {config.data.batch_size} is not divisible by the '
            f'{jax.process_count()} processes'
        )


def export_generator(
    config: ml_collections.ConfigDict,
    state: state_lib.TrainState,
    out_dir: str,
    fmt: str,
    train_faces: int | None = None,
    *,
    with_state: bool = False,
    info: Mapping[str, Any] | None = None,
) -> str | None:
    """Writes the generator of `state` (module docstring).

    Args:
      config: the run's config (`model.width`, `model.resolution`, `dataset`).
      state: the train state; its `generator`'s evaluation params (the EMA when it has one).
      out_dir: the export folder.
      fmt: `conversion.json`'s `format` (the anonymizer checks it).
      train_faces: the number of training faces, recorded when given.
      with_state: also write the other variable collections (`batch_stats`: CIAGAN's
        spectral-norm vectors), i.e. the whole variables dict `{'params', ...}`.
      info: more `conversion.json` entries.

    Returns:
      `out_dir`, or None in a multi-process run (orbax saves there are collective; export from
      a single-process run resumed on the workdir instead).
    """
    if jax.process_count() > 1:
        logging.warning('multi-process run: the generator is not exported to %s', out_dir)
        return None
    net = jax.device_get(state.nets[GENERATOR])
    tree = {'params': net.eval_params, **net.batch_stats} if with_state else net.eval_params
    record = {
        'format': fmt,
        'width': float(config.model.width),
        'resolution': int(config.model.resolution),
        'step': int(jax.device_get(state.step)),
        'dataset': config.dataset,
        **({'train_faces': int(train_faces)} if train_faces is not None else {}),
        **(info or {}),
    }
    torch_import.save_converted(out_dir, tree, record, force=True)
    return out_dir


def train_on_face_crops(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    build_models: Callable[[ml_collections.ConfigDict], tuple[Any, Any]],
    specs: Callable[..., Mapping[str, state_lib.Spec]],
    make_step: Callable[..., Callable],
    batch_keys: Sequence[str],
    export_format: str,
    landmarks68: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """A generator / discriminator GAN trained on face crops (module docstring).

    Args:
      config: the run's config.
      workdir: the run's folder.
      build_models: config -> (generator, discriminator).
      specs: (config, generator, discriminator) -> the state's network specs.
      make_step: (config, generator, discriminator, mesh) -> the jitted step.
      batch_keys: the batch fields the step takes.
      export_format: the export's `conversion.json` format.
      landmarks68: the batches also carry the crops' 68 landmarks.
      stop_after: stop (checkpointed) after this many steps.

    Returns:
      What `loop.run` returns (`steps`, `history`, the evaluators' results).

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds a run of another config.
      FileNotFoundError, ValueError: missing or bad face crops, a bad config.
    """
    check_batch(config)
    d = config.data
    train_crops = face_crops.load_split(d.source, d.train, 'train', limit=d.limit)

    def make_task(mesh) -> loop.Task:
        generator, discriminator = build_models(config)

        def batches(position: int):
            ds = face_crop_pipeline.make_gan_dataset(
                train_crops,
                batch_size=d.batch_size // jax.process_count(),
                resolution=config.model.resolution,
                seed=config.seed,
                train=True,
                start_position=position,
                flip=d.flip,
                box_jitter=d.box_jitter,
                landmarks68=landmarks68,
            )
            return face_crop_pipeline.as_numpy_batches(ds)

        def export(state: state_lib.TrainState) -> str | None:
            out = os.path.join(workdir, EXPORT_DIR)
            return export_generator(config, state, out, export_format, len(train_crops))

        return loop.Task(
            specs=specs(config, generator, discriminator),
            models={GENERATOR: generator, DISCRIMINATOR: discriminator},
            train_step=make_step(config, generator, discriminator, mesh),
            batches=batches,
            shard=lambda b: sharding.shard_batch(b, mesh, batch_keys),
            finite_keys=('d_loss', 'g_loss'),
            batch_size=int(d.batch_size),
            hparams={'data.train_faces': len(train_crops)},
            results={'train_faces': len(train_crops)},
            names_key='position',
            export=export,
        )

    return loop.run(config, workdir, make_task, stop_after=stop_after)
