"""DSFD detector trainer: (anonymized) WIDER train split in, WIDER val AP out.

`train_and_evaluate(config, workdir)` runs one experiment of the paper's Fig. 4:

1. `check_inputs` fails before anything is compiled: a GAN anonymizer that does not exist yet
   (never falls back to original faces), a missing train or val folder (naming it and, for an
   anonymized set, the `launch/anonymize.py` command that creates it). Then, before anything
   is written to the workdir, `checkpoints.check_workdir` refuses a workdir that holds a run
   of another config (its `config.json` differs; the error lists the keys, old and new
   values) or checkpoints without a `config.json`; `config.resume_with_changed_config=True`
   continues such a run and records the change in `<workdir>/config_changes.json` (and in
   `results.json`, `config_changes`).
2. Builds the mesh (`data` axis), the model, the optimiser (`train_state.optimizer_from_config`)
   and the train state (from scratch, or from a converted checkpoint: `config.model.init_from`);
   resumes from the newest checkpoint in `<workdir>/checkpoints` with the input position.
3. Trains with the jit step of `detector_step`; writes CLU summaries (loss terms, lr, grad norm,
   images/s; the config as hparams; the APs of every evaluation and, of every single-scale
   one, a grid of val images with their faces (red) and detections (green), the last one also
   saved as `val_detections.png`)
   and reports progress. A non-finite loss stops the run
   with its step and the file names of its batch.
4. Evaluates on the unaltered val split (`evaluation.detector_eval`; WIDER AP easy / medium /
   hard, official protocol, in memory): single-scale every `config.evals.every_steps`, and at
   the end with `config.evals.final_procedure` (paper configs: the multi-scale + flip test),
   writing the official prediction folder `<workdir>/predictions/<event>/<image>.txt` and
   `<workdir>/results.json`.

With several processes (`jax.distributed`) each one trains on its own shard of the train split
and detects its own shard of val; process 0 writes the summaries, predictions and results.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from safefakes_jax import sharding
from safefakes_jax.anonymizers import base as anonymizer_base
from safefakes_jax.anonymizers import manifest
from safefakes_jax.data import detection_pipeline, tfds_wider, wider
from safefakes_jax.detection import anchors
from safefakes_jax.evaluation import detector_eval, image_grids
from safefakes_jax.models import dsfd, torch_import
from safefakes_jax.train import checkpoints, detector_step, train_state

LOSS_KEYS = ('loc1', 'conf1', 'loc2', 'conf2', 'loss')


class AnonymizerUnavailableError(RuntimeError):
    """The config trains on a set made by an anonymizer this framework does not have yet."""


def _anonymize_command(config: ml_collections.ConfigDict) -> str:
    """The `launch/anonymize.py` command that creates `config.data.train_root`."""
    src = config.data.original_train_root
    smoke = ':smoke' if 'synthetic' in src else ''
    return (f'python launch/anonymize.py --config=configs/anonymize/{config.dataset}.py{smoke} '
            f'--config.src={src} --config.dst={config.data.train_root}')


def check_inputs(config: ml_collections.ConfigDict) -> None:
    """Fails early (before compiling) when the run cannot have its data.

    Raises:
      AnonymizerUnavailableError: `config.dataset` names an anonymizer that does not exist.
      FileNotFoundError: the train or val split (or the val ground truth) is missing; the
        message names the folder and how to create it.
      ValueError: an unknown `config.evals.final_procedure`.
    """
    if config.evals.final_procedure not in detector_eval.PROCEDURES:
        raise ValueError(f'config.evals.final_procedure={config.evals.final_procedure!r}: '
                         f'not one of {detector_eval.PROCEDURES}')
    method = config.dataset
    if method != 'original' and method not in anonymizer_base.names():
        raise AnonymizerUnavailableError(
            f'config dataset {method!r}: the {method} anonymizer does not exist yet in '
            f'safefakes_jax.anonymizers (known: {", ".join(anonymizer_base.names())}), so '
            f'{config.data.train_root} cannot be created. Not training (this experiment never '
            'falls back to the original faces).')
    root = config.data.train_root
    if method == 'original':
        how = (f'python tools/make_synthetic_wider.py --out {root}' if 'synthetic' in root
               else 'see README.md, "Real WIDER FACE"')
    else:
        how = _anonymize_command(config)
    wider.require_split(root, 'train', how_to_create=how)
    val = config.data.val_root
    val_how = (f'python tools/make_synthetic_wider.py --out {val}' if 'synthetic' in val
               else 'see README.md, "Real WIDER FACE"')
    wider.require_split(val, 'val', how_to_create=val_how)
    gt = wider.ground_truth_dir(val)
    if not os.path.isdir(gt):
        raise FileNotFoundError(f'WIDER FACE val ground truth not found: {gt} is missing '
                                f'(root {val!r}). Create it with: {val_how}')


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
        raise ValueError(f'{root}: no {manifest.CONFIG_FILE}, so it is unknown what anonymized '
                         f'this folder and whether every face was; create it with: '
                         f'{_anonymize_command(config)}')
    if os.path.exists(os.path.join(root, manifest.PARTIAL)):
        raise ValueError(f'{root}: its anonymization run has not finished '
                         f'({manifest.PARTIAL} exists); rerun: {_anonymize_command(config)}')
    settings = anonymization.get('settings') or {}
    method = (settings.get('anonymizer') or {}).get('name')
    if method != config.dataset:
        raise ValueError(f'{root} was anonymized with {method!r}, but config.dataset is '
                         f'{config.dataset!r}; refusing to label one as the other')
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


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """`checkpoints.check_workdir` on process 0, its verdict shared with every process.

    Returns:
      The change to record (None: nothing to record).

    Raises:
      checkpoints.WorkdirConfigError: the workdir holds a run of another config.
    """
    if jax.process_count() == 1:
        return checkpoints.check_workdir(workdir, config)
    error, change = None, None
    if jax.process_index() == 0:
        try:
            change = checkpoints.check_workdir(workdir, config)
        except checkpoints.WorkdirConfigError as e:
            error = e
    refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if error is not None:
        raise error
    if int(refused):
        raise checkpoints.WorkdirConfigError(f'process 0 refused --workdir {workdir} (another '
                                             'config\'s run; see its error message)')
    return change


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
        raise ValueError(f'config.model.init_from={path!r} does not fit the model of this '
                         f'config (config.model.width?): {e}') from None
    return jax.device_put(merged, sharding.replicated(mesh))


def evaluate(config, params, predict_fn, mesh, anchors, ground_truth, procedure='single',
             model=None, grid=None):
    """(AP dict, predictions) on the val split with a `detector_eval` procedure."""
    if procedure == 'multiscale':
        preds = detector_eval.predict_multiscale(config, model, params)
    elif procedure == 'single':
        preds = detector_eval.predict_single(config, params, predict_fn, mesh, anchors, grid)
    else:
        raise ValueError(f'unknown test procedure {procedure!r} ({detector_eval.PROCEDURES})')
    return detector_eval.average_precision(preds, ground_truth), preds


def _write_eval(writer, step: int, ap: dict[str, float], grid: list[np.ndarray]) -> None:
    """AP scalars and the image grid of detections on val images (process 0's)."""
    writer.write_scalars(step, {f'val/ap_{k}': v for k, v in ap.items()})
    if grid:
        writer.write_images(step, {'val/detections': image_grids.tile(grid)[None]})


def _check_finite(window: list[tuple[int, Any, np.ndarray]]) -> list[dict[str, float]]:
    """Fetches a window of (step, metrics, filenames); raises at the first non-finite loss."""
    fetched = jax.device_get([m for _, m, _ in window])
    for (step, _, names), m in zip(window, fetched, strict=True):
        if not np.isfinite(m['loss']):
            files = ', '.join(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            raise FloatingPointError(f'non-finite loss ({float(m["loss"])}) at step {step}; '
                                     f'batch images: {files}')
    return [{k: float(v) for k, v in m.items()} for m in fetched]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after: int | None = None) -> dict[str, Any]:
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
    change = check_workdir(config, workdir)
    prepare_records(config)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.mesh.num_devices or None)
    n_dev = mesh.devices.size
    if config.data.batch_size % n_dev:
        raise ValueError(f'global batch {config.data.batch_size} is not divisible by the '
                         f'{n_dev} devices of the mesh')
    host_batch = config.data.batch_size // jax.process_count()
    total = config.train.steps
    model = build_model(config)
    schedule, tx = train_state.optimizer_from_config(config.train)
    size = config.data.image_size

    ckpt = checkpoints.Checkpointer(workdir, config.ckpt.every_steps, config.ckpt.max_to_keep)
    latest = ckpt.latest_step()
    try:
        restored = ckpt.restore(train_state.abstract_train_state(model, tx, size, mesh))
    except Exception as e:  # Orbax reports a tree or shape mismatch in several types.
        ckpt.close()
        raise ValueError(f'{workdir}: checkpoint step {latest} does not fit this '
                         f'config (resume_with_changed_config cannot change the model): '
                         f'{type(e).__name__}: {e}') from None
    # Only now, with a checkpoint that fits: record an accepted change, then the new config.
    if change is not None:
        path = checkpoints.record_changes(workdir, change)
        if jax.process_index() == 0:
            logging.warning('continuing %s at step %d with a changed config (%s); recorded in %s',
                            workdir, change['step'],
                            ', '.join(change['changes']) or change.get('note', ''), path)
    checkpoints.write_config(workdir, config)
    if restored is None:
        rng = jax.random.key(config.seed)
        state = train_state.create_train_state(model, tx, jax.random.fold_in(rng, 0), size, mesh)
        if config.model.get('init_from'):
            state = state.replace(params=load_init_params(config.model.init_from, state.params,
                                                          mesh))
        position = 0
    else:
        state, position = restored
    # Via the raw key data: device_put of a typed key onto a multi-process sharding fails.
    step_rng = jax.random.wrap_key_data(jax.device_put(
        jax.random.key_data(jax.random.fold_in(jax.random.key(config.seed), 1)),
        sharding.replicated(mesh)))
    train_step = detector_step.make_train_step(
        model, schedule, mesh, image_size=size, aspect_ratio=config.model.anchor_aspect_ratio,
        match_threshold=config.model.match_threshold, pal_weight=config.model.pal_weight,
        neg_pos_ratio=config.model.neg_pos_ratio)
    predict_fn = detector_step.make_predict_step(model, mesh)
    _, eval_anchors = anchors.shot_anchors(config.evals.image_size,
                                                 config.model.anchor_aspect_ratio)
    ground_truth = wider.read_ground_truth(wider.ground_truth_dir(config.data.val_root))

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False)
    first_step = int(state.step)
    if first_step == 0:
        hparams = _flat(config.to_dict())
        if provenance:
            hparams.update(_flat(provenance, 'anonymization.'))
        writer.write_hparams(hparams)
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)

    ds = detection_pipeline.make_train_dataset(
        config.data.train_root, batch_size=host_batch, image_size=size,
        max_boxes=config.data.max_boxes, seed=config.seed,
        data_dir=config.data.tfds_dir or None,
        anchor_sampling_prob=config.data.anchor_sampling_prob,
        shuffle_buffer=config.data.shuffle_buffer, start_position=position)
    batches = detection_pipeline.as_numpy_batches(ds)
    history: list[dict[str, float]] = []
    window: list = []
    t0, images = time.perf_counter(), 0
    step = first_step
    stopped = False
    try:
        while step < total:
            batch = next(batches)
            state, metrics = train_step(state, detector_step.shard_batch(batch, mesh), step_rng)
            step += 1
            position = int(batch['position'].max()) + 1
            images += config.data.batch_size
            window.append((step, metrics, batch['filename']))
            report(step)
            if stop_after is not None and step >= stop_after:
                ckpt.request_stop()
            stop = ckpt.should_stop()
            ckpt_due = ckpt.every_steps and step % ckpt.every_steps == 0
            if step % config.train.log_every == 0 or step == total or stop or ckpt_due:
                fetched = _check_finite(window)
                history.extend(fetched)
                dt = time.perf_counter() - t0
                scalars = {f'train/{k}': np.mean([m[k] for m in fetched]) for k in LOSS_KEYS}
                scalars.update({'train/lr': fetched[-1]['lr'],
                                'train/grad_norm': np.mean([m['grad_norm'] for m in fetched]),
                                'train/images_per_s': images / max(dt, 1e-9)})
                writer.write_scalars(step, scalars)
                window, t0, images = [], time.perf_counter(), 0
            ckpt.maybe_save(step, state, position, force=stop)
            if stop:
                stopped = True
                break
            if config.evals.every_steps and step % config.evals.every_steps == 0 \
                    and step < total:
                grid = []
                with report.timed('eval'):
                    ap, _ = evaluate(config, state.params, predict_fn, mesh, eval_anchors,
                                     ground_truth, grid=grid)
                _write_eval(writer, step, ap, grid)
        if stopped:
            return {'stopped_at': step, 'history': history}
        ckpt.maybe_save(step, state, position, force=True)
        procedure, grid = config.evals.final_procedure, []
        with report.timed('eval'):
            ap, preds = evaluate(config, state.params, predict_fn, mesh, eval_anchors,
                                 ground_truth, procedure, model, grid)
        _write_eval(writer, step, ap, grid)
        if grid and jax.process_index() == 0:
            image_grids.save_png(os.path.join(workdir, 'val_detections.png'),
                                 image_grids.tile(grid))
        results = dict(ap, steps=step, training_dataset=config.data.train_root,
                       anonymizer=config.dataset, val_root=config.data.val_root,
                       test_procedure=procedure, anonymization=provenance)
        if procedure == 'single':
            results['eval_image_size'] = config.evals.image_size
        changes = checkpoints.read_changes(workdir)
        if changes:  # This result is not of one config from start to end: say so.
            results['config_changes'] = [{'step': c.get('step'), 'keys': sorted(c['changes'])}
                                         for c in changes]
        detector_eval.write_results(workdir, preds, results)
        return dict(results, history=history)
    finally:
        writer.flush()
        ckpt.close()


def _flat(d: dict, prefix: str = '') -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
