"""DSFD detector trainer: (anonymized) WIDER train split in, WIDER val AP out.

`train_and_evaluate(config, workdir)` runs one experiment of the paper's Fig. 4 as a task of
the shared training loop (`train/loop.py`: workdir check, restore-or-init, summaries, NaN
check, checkpoints, preemption, evaluators, `results.json`). What is DSFD's own:

1. `check_inputs` fails before anything is compiled: a GAN anonymizer that does not exist yet
   (never falls back to original faces), a missing train or val folder (naming it and, for an
   anonymized set, the `launch/anonymize.py` command that creates it), an evaluation with an
   unknown procedure. `training_set_provenance` reads what made an anonymized training set.
2. One network, `detector` (`specs`): the DSFD of `config.model`, its optimiser from
   `config.optim.detector` (`train/optim.py`), from scratch or from a converted checkpoint
   (`config.model.init_from`).
3. The jit step of `detector_step` on the detection pipeline's batches; a non-finite loss stops
   the run with its step and the file names of its batch.
4. Its evaluators (`config.evals`, `evaluation/evaluators/wider_ap.py`; WIDER AP easy / medium
   / hard, official protocol): single-scale every `config.evals.val.every_steps` with a grid
   of val images (faces red, detections green), and at the end `config.evals.final`
   (paper configs: the multi-scale + flip test), which writes the official prediction folder
   `<workdir>/predictions/<event>/<image>.txt`; `results.json` adds the training set and its
   provenance, and `registry_entry.json` (`evaluation/run_registry.py`) is what
   `launch/report.py` reads of the run.

With several processes (`jax.distributed`) each one trains on its own shard of the train split
and detects its own shard of val; process 0 writes the summaries, predictions and results.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.experimental import multihost_utils

from safefakes_jax import sharding
from safefakes_jax.anonymizers import base as anonymizer_base
from safefakes_jax.data import detection_pipeline, manifest, tfds_wider, wider, wider_mat
from safefakes_jax.evaluation import detector_eval, run_registry
from safefakes_jax.models import dsfd, torch_import
from safefakes_jax.train import detector_step, loop, optim
from safefakes_jax.train import state as state_lib

NETWORK = detector_step.NETWORK


class AnonymizerUnavailableError(RuntimeError):
    """The config trains on a set made by an anonymizer this framework does not have yet."""


def _anonymize_command(config: ml_collections.ConfigDict) -> str:
    """The `launch/anonymize.py` command that creates `config.data.train_root`."""
    src = config.data.original_train_root
    smoke = ':smoke' if 'synthetic' in src else ''
    return (
        f'python launch/anonymize.py --config=configs/anonymize/{config.dataset}.py{smoke} '
        f'--config.src={src} --config.dst={config.data.train_root}'
    )


def check_inputs(config: ml_collections.ConfigDict) -> None:
    """Fails early (before compiling) when the run cannot have its data.

    Raises:
      AnonymizerUnavailableError: `config.dataset` names an anonymizer that does not exist.
      FileNotFoundError: the train or val split (or the val ground truth) is missing; the
        message names the folder and how to create it.
      ValueError: an evaluation (`config.evals.<name>`) with an unknown procedure.
    """
    for name, section in config.evals.items():
        procedure = section.get('procedure', 'single')
        if procedure not in detector_eval.PROCEDURES:
            raise ValueError(
                f'config.evals.{name}.procedure={procedure!r}: not one of '
                f'{detector_eval.PROCEDURES}'
            )
    method = config.dataset
    if method != 'original' and method not in anonymizer_base.names():
        raise AnonymizerUnavailableError(
            f'config dataset {method!r}: the {method} anonymizer does not exist yet in '
            f'safefakes_jax.anonymizers (known: {", ".join(anonymizer_base.names())}), so '
            f'{config.data.train_root} cannot be created. Not training (this experiment never '
            'falls back to the original faces).'
        )
    root = config.data.train_root
    if method == 'original':
        how = (
            f'python tools/make_synthetic_wider.py --out {root}'
            if 'synthetic' in root
            else 'see README.md, "Real WIDER FACE"'
        )
    else:
        how = _anonymize_command(config)
    wider.require_split(root, 'train', how_to_create=how)
    val = config.data.val_root
    val_how = (
        f'python tools/make_synthetic_wider.py --out {val}'
        if 'synthetic' in val
        else 'see README.md, "Real WIDER FACE"'
    )
    wider.require_split(val, 'val', how_to_create=val_how)
    gt = wider_mat.ground_truth_dir(val)
    if not os.path.isdir(gt):
        raise FileNotFoundError(
            f'WIDER FACE val ground truth not found: {gt} is missing '
            f'(root {val!r}). Create it with: {val_how}'
        )


def training_set_provenance(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """What made `config.data.train_root`: its `anonymization_config.json` (None: original set).

    Returns:
      `{'config_hash', 'settings'}` (method, its parameters, seed, output format; learned
      methods add their weights' sha256 to the parameters), written into `results.json` and
      the hparams so that a result always names the exact set it was trained on.

    Raises:
      ValueError: an anonymized set without that file (not written by `launch/anonymize.py`:
        what anonymized it, and whether every face was, is unknown), one whose run has not
        finished, or one made by another method than `config.dataset`.
    """
    if config.dataset == 'original':
        return None
    root = config.data.train_root
    anonymization = manifest.read_config(root)
    if anonymization is None:
        raise ValueError(
            f'{root}: no {manifest.CONFIG_FILE}, so it is unknown what anonymized '
            f'this folder and whether every face was; create it with: '
            f'{_anonymize_command(config)}'
        )
    if os.path.exists(os.path.join(root, manifest.PARTIAL)):
        raise ValueError(
            f'{root}: its anonymization run has not finished '
            f'({manifest.PARTIAL} exists); rerun: {_anonymize_command(config)}'
        )
    settings = anonymization.get('settings') or {}
    method = (settings.get('anonymizer') or {}).get('name')
    if method != config.dataset:
        raise ValueError(
            f'{root} was anonymized with {method!r}, but config.dataset is '
            f'{config.dataset!r}; refusing to label one as the other'
        )
    return {'config_hash': anonymization['config_hash'], 'settings': settings}


def prepare_records(config: ml_collections.ConfigDict) -> None:
    """Multi-process: process 0 prepares the TFRecords of the train and val folders first.

    Processes sharing a filesystem must not write the same TFDS records at once; after the
    barrier the others find them prepared (or, on disks of their own, prepare their own).
    """
    if jax.process_count() == 1:
        return
    if jax.process_index() == 0:
        for root in dict.fromkeys((config.data.train_root, config.data.val_root)):
            tfds_wider.prepare(root, config.data.tfds_dir or None)
    multihost_utils.sync_global_devices('safefakes_jax: TFDS records prepared')


def build_model(config: ml_collections.ConfigDict) -> dsfd.DSFD:
    """The DSFD of `config.model` (width, compute dtype)."""
    dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.model.compute_dtype]
    return dsfd.DSFD(width=config.model.width, dtype=dtype)


def load_init_params(path: str, params: Any, mesh) -> Any:
    """`params` with the leaves of a converted checkpoint (`tools/convert_torch_weights.py`).

    A `dsfd_vgg` conversion replaces every parameter, a `vgg16_reducedfc` one the backbone.

    Raises:
      FileNotFoundError: `path` holds no converted checkpoint.
      ValueError: the checkpoint does not fit the model (names the parameter and `path`).
    """
    partial = torch_import.load_converted(path)
    try:
        merged = torch_import.merge_params(jax.device_get(params), partial)
    except ValueError as e:
        raise ValueError(
            f'config.model.init_from={path!r} does not fit the model of this '
            f'config (config.model.width?): {e}'
        ) from None
    return jax.device_put(merged, sharding.replicated(mesh))


def specs(
    config: ml_collections.ConfigDict, model: dsfd.DSFD
) -> tuple[dict[str, state_lib.Spec], optax.Schedule]:
    """The trainer's one network (`detector`) and its learning-rate schedule."""
    schedule, tx = optim.build(config.optim.detector, config.train.steps)
    size = config.data.image_size

    def init(key):
        return model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))

    return {NETWORK: state_lib.Spec(init, tx)}, schedule


def make_step(config: ml_collections.ConfigDict, model: dsfd.DSFD, schedule, mesh):
    """The jitted DSFD train step with the loss settings of `config.model`."""
    return detector_step.make_train_step(
        model,
        schedule,
        mesh,
        image_size=config.data.image_size,
        aspect_ratio=config.model.anchor_aspect_ratio,
        match_threshold=config.model.match_threshold,
        pal_weight=config.model.pal_weight,
        neg_pos_ratio=config.model.neg_pos_ratio,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains DSFD as `config` says, evaluates it, and returns the results (module docstring).

    Args:
      config: a `configs/dsfd_*.py` config.
      workdir: the run folder (checkpoints, summaries, config.json, predictions, results).
      stop_after: preemption drill: behave as if SIGTERM arrived after this step.

    Returns:
      The results (`easy`, `medium`, `hard`, `steps`, ...) and `history` (the per-step metrics
      of this process's steps); `{'stopped_at', 'history'}` when stopped early.

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds a run of another config (nothing is
        written then); see `checkpoints.check_workdir`.
      AnonymizerUnavailableError, FileNotFoundError, ValueError: see `check_inputs`.
    """
    check_inputs(config)
    provenance = training_set_provenance(config)
    size = config.data.image_size

    def make_task(mesh) -> loop.Task:
        prepare_records(config)
        model = build_model(config)
        networks, schedule = specs(config, model)
        step = make_step(config, model, schedule, mesh)

        def batches(position: int):
            ds = detection_pipeline.make_train_dataset(
                config.data.train_root,
                batch_size=config.data.batch_size // jax.process_count(),
                image_size=size,
                max_boxes=config.data.max_boxes,
                seed=config.seed,
                data_dir=config.data.tfds_dir or None,
                anchor_sampling_prob=config.data.anchor_sampling_prob,
                shuffle_buffer=config.data.shuffle_buffer,
                start_position=position,
            )
            return detection_pipeline.as_numpy_batches(ds)

        def init_state(state: state_lib.TrainState) -> state_lib.TrainState:
            if not config.model.get('init_from'):
                return state
            net = state.nets[NETWORK]
            return state.update(
                **{
                    NETWORK: net.replace(
                        params=load_init_params(config.model.init_from, net.params, mesh)
                    )
                }
            )

        return loop.Task(
            specs=networks,
            models={NETWORK: model},
            train_step=step,
            batches=batches,
            shard=lambda batch: detector_step.shard_batch(batch, mesh),
            finite_keys=('loss',),
            batch_size=config.data.batch_size,
            init_state=init_state,
            hparams=loop.flat_hparams(provenance or {}, 'anonymization.'),
            results=dict(
                training_dataset=config.data.train_root,
                anonymizer=config.dataset,
                anonymization=provenance,
            ),
        )

    results = loop.run(config, workdir, make_task, stop_after=stop_after)
    if 'stopped_at' not in results and jax.process_index() == 0:
        run_registry.write(workdir, results)  # The report's entry for this run.
    return results
