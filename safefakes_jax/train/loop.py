"""The one training loop: every trainer (DSFD, the GANs) is a `Task` run by `run`.

A trainer differs from another in its networks (`state.Spec`s), its jit-compiled step
`(state, batch, rng) -> (state, metrics)`, its input stream and its evaluators; everything
else is here, once:

1. `checkpoints.check_workdir` before anything is written: a workdir holding another config's
   run is refused with the differing keys (`config.resume_with_changed_config=True` continues
   it and records the change, once the checkpoint is known to fit);
2. restore-or-init: the newest checkpoint of `<workdir>/checkpoints` (state and input
   position) into `state.abstract(specs)`, else `state.create(specs, fold_in(key(seed), 0))`
   and the task's `init_state` hook (a converted checkpoint to start from); `config.json`;
3. the step key `fold_in(key(seed), 1)`, replicated (the step folds in its step number);
4. a CLU writer: the config (and the task's provenance) as hparams at step 0, flattened with
   `flax.traverse_util.flatten_dict`; `clu.parameter_overview` of every network in the log;
5. every `config.train.log_every` steps (and at checkpoint steps, the last step and a stop):
   the window means of every metric the step returns, images/s, the non-finite check on the
   task's `finite_keys` (naming the step and its batch's files), and the cross-process stop
   check (SIGTERM or `stop_after`: save, return) -- not after every step, since with several
   processes it is a collective;
6. checkpoints every `config.ckpt.every_steps`, at a stop and at the end;
7. the evaluators of `config.evals` (`evaluation.evaluators`, built once): the periodic ones
   every `every_steps`, the final ones at the end; their scalars and images go to the writer,
   the final ones' images also to `<workdir>/<evaluator>_<image>.png`, and their results with
   the step count, the task's `results` and any recorded config changes to
   `<workdir>/results.json`;
8. the task's `export` hook with the final state (a GAN trainer writes its EMA generator).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.traverse_util
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from safefakes_jax import sharding
from safefakes_jax.data import atomic_io
from safefakes_jax.evaluation import evaluators as evaluators_lib
from safefakes_jax.evaluation import image_grids
from safefakes_jax.train import checkpoints
from safefakes_jax.train import state as state_lib


@dataclasses.dataclass
class Task:
    """What a trainer hands the loop.

    Attributes:
      specs: the networks by name (`state.Spec`).
      models: the Flax modules by network name (for the evaluators).
      train_step: jit-compiled `(state, batch, rng) -> (state, metrics)`; `batch` is what
        `shard` returns; `metrics` a dict of scalars.
      batches: start position -> iterator of this host's batches (numpy dicts with `position`,
        the stream position of each example, and `names_key`).
      shard: a host batch -> the global device arrays the step takes.
      finite_keys: metrics that must be finite (else the run stops naming step and batch).
      batch_size: examples per step over all processes (for the throughput).
      init_state: applied to a fresh state (not to a restored one), e.g. to load weights.
      export: called with the final state after the final evaluations (e.g. to write the
        network an anonymizer loads); its return value (JSON-ready) goes into `results.json`
        as `export`.
      hparams: extra hparams written beside the config (provenance).
      results: extra entries of `results.json`.
      names_key: the batch field naming its examples (file names), for error messages.
    """

    specs: Mapping[str, state_lib.Spec]
    models: Mapping[str, Any]
    train_step: Callable[[state_lib.TrainState, dict, jax.Array], tuple[state_lib.TrainState, dict]]
    batches: Callable[[int], Iterator[dict]]
    shard: Callable[[Mapping[str, np.ndarray]], dict]
    finite_keys: Sequence[str]
    batch_size: int
    init_state: Callable[[state_lib.TrainState], state_lib.TrainState] | None = None
    export: Callable[[state_lib.TrainState], Any] | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    results: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    names_key: str = 'filename'


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
        raise checkpoints.WorkdirConfigError(
            f"process 0 refused --workdir {workdir} (another config's run; see its error message)"
        )
    return change


def flat_hparams(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """`{'a': {'b': 1}}` -> `{prefix + 'a.b': 1}`, values TensorBoard takes (others as str)."""
    flat = flax.traverse_util.flatten_dict(dict(d), sep='.')
    return {
        prefix + k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()
    }


def _fetch_window(
    window: list[tuple[int, Any, Any]], finite_keys: Sequence[str]
) -> list[dict[str, float]]:
    """Fetches a window of (step, metrics, names); raises at the first non-finite metric."""
    fetched = jax.device_get([m for _, m, _ in window])
    for (step, _, names), m in zip(window, fetched, strict=True):
        bad = [k for k in finite_keys if not np.isfinite(m[k])]
        if bad:
            files = ', '.join(
                n.decode() if isinstance(n, bytes) else str(n)
                for n in np.asarray(names).reshape(-1)
            )
            raise FloatingPointError(
                f'non-finite {", ".join(f"{k} ({float(m[k])})" for k in bad)} at step {step}; '
                f'batch: {files}'
            )
    return [{k: float(v) for k, v in m.items()} for m in fetched]


def _write_eval(writer, step: int, name: str, result: evaluators_lib.Result) -> None:
    writer.write_scalars(step, {f'{name}/{k}': v for k, v in result.scalars.items()})
    if result.images:
        writer.write_images(step, {f'{name}/{k}': v[None] for k, v in result.images.items()})


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    make_task: Callable[[Mesh], Task],
    *,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Trains `make_task(mesh)` as `config` says (module docstring).

    Args:
      config: a trainer config (`seed`, `train.steps`, `train.log_every`, `ckpt`, `mesh`,
        `evals`).
      workdir: the run folder.
      make_task: builds the task on the mesh (after the workdir check, before restoring).
      stop_after: preemption drill: behave as if SIGTERM arrived after this step.

    Returns:
      The results (as in `results.json`) and `history` (this process's per-step metrics);
      `{'stopped_at', 'history'}` when stopped early.

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds another config's run (nothing written).
      ValueError: a checkpoint that does not fit; a batch not divisible by the devices.
      FloatingPointError: a non-finite metric of `finite_keys`.
    """
    change = check_workdir(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.mesh.num_devices or None)
    task = make_task(mesh)
    if task.batch_size % mesh.devices.size:
        raise ValueError(
            f'global batch {task.batch_size} is not divisible by the '
            f'{mesh.devices.size} devices of the mesh'
        )
    total, log_every = config.train.steps, config.train.log_every
    ckpt = checkpoints.Checkpointer(workdir, config.ckpt.every_steps, config.ckpt.max_to_keep)
    try:
        restored = ckpt.restore(
            state_lib.abstract(task.specs, mesh),
            hint='resume_with_changed_config cannot change the networks',
        )
    except ValueError:
        ckpt.close()
        raise
    # Only now, with a checkpoint that fits: record an accepted change, then the new config.
    if change is not None:
        path = checkpoints.record_changes(workdir, change)
        if jax.process_index() == 0:
            logging.warning(
                'continuing %s at step %d with a changed config (%s); recorded in %s',
                workdir,
                change['step'],
                ', '.join(change['changes']) or change.get('note', ''),
                path,
            )
    checkpoints.write_config(workdir, config)
    root = jax.random.key(config.seed)
    if restored is None:
        state = state_lib.create(task.specs, jax.random.fold_in(root, 0), mesh)
        if task.init_state is not None:
            state = task.init_state(state)
        position = 0
    else:
        state, position = restored
    # Via the raw key data: device_put of a typed key onto a multi-process sharding fails.
    step_rng = jax.random.wrap_key_data(
        jax.device_put(jax.random.key_data(jax.random.fold_in(root, 1)), sharding.replicated(mesh))
    )
    evaluators = evaluators_lib.build(
        config.get('evals', {}), evaluators_lib.Context(config, task.models, mesh, workdir)
    )

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False
    )
    step = first_step = int(state.step)
    if first_step == 0:
        writer.write_hparams(flat_hparams(config.to_dict()) | flat_hparams(task.hparams))
    if jax.process_index() == 0:
        for name, net in state.nets.items():
            logging.info(
                'network %s:\n%s', name, parameter_overview.get_parameter_overview(net.params)
            )
    report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
    batches = task.batches(position)
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, Any]] = []  # Periodic evaluations, for results.json.
    window: list = []
    t0, examples = time.perf_counter(), 0
    try:
        while step < total:
            batch = next(batches)
            state, metrics = task.train_step(state, task.shard(batch), step_rng)
            step += 1
            position = int(batch['position'].max()) + 1
            examples += task.batch_size
            window.append((step, metrics, batch.get(task.names_key, [])))
            report(step)
            drill = stop_after is not None and step >= stop_after
            if drill:
                ckpt.request_stop()
            ckpt_due = ckpt.every_steps and step % ckpt.every_steps == 0
            stop = False
            if step % log_every == 0 or step == total or ckpt_due or drill:
                fetched = _fetch_window(window, task.finite_keys)
                history.extend(fetched)
                scalars = {
                    f'train/{k}': float(np.mean([m[k] for m in fetched])) for k in fetched[-1]
                }
                scalars['train/examples_per_s'] = examples / max(time.perf_counter() - t0, 1e-9)
                writer.write_scalars(step, scalars)
                window, t0, examples = [], time.perf_counter(), 0
                stop = ckpt.should_stop()  # A collective: only at log steps.
            ckpt.maybe_save(step, state, position, force=stop)
            if stop:
                return {'stopped_at': step, 'history': history}
            for name, ev in evaluators.items():
                if ev.every_steps and step % ev.every_steps == 0 and step < total:
                    with report.timed(name):
                        result = ev.run(state, step)
                    _write_eval(writer, step, name, result)
                    evaluations.append({'step': step, 'name': name, **result.scalars})
        ckpt.maybe_save(step, state, position, force=True)
        results: dict[str, Any] = {}
        for name, ev in evaluators.items():
            if not ev.final:
                continue
            with report.timed(name):
                result = ev.run(state, step)
            _write_eval(writer, step, name, result)
            results.update(result.results)
            if jax.process_index() == 0:
                for key, image in result.images.items():
                    image_grids.save_png(os.path.join(workdir, f'{name}_{key}.png'), image)
        results.update(task.results, steps=step)
        if evaluations:  # Periodic evaluations of this process's run (resumed: since then).
            results['evaluations'] = evaluations
        if task.export is not None:
            results['export'] = task.export(state)
        changes = checkpoints.read_changes(workdir)
        if changes:  # This result is not of one config from start to end: say so.
            results['config_changes'] = [
                {'step': c.get('step'), 'keys': sorted(c['changes'])} for c in changes
            ]
        if jax.process_index() == 0:
            atomic_io.write_text(
                os.path.join(workdir, 'results.json'), json.dumps(results, indent=2) + '\n'
            )
        return dict(results, history=history)
    finally:
        writer.flush()
        ckpt.close()
