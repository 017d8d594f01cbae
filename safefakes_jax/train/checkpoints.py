"""Checkpoints of a trainer: an orbax `CheckpointManager` plus the input stream position.

`Checkpointer(workdir, ...)` keeps `<workdir>/checkpoints/<step>/` with two items:

* `state`: the `TrainState` pytree (orbax `StandardSave`; restored into an abstract target
  carrying the shardings, so it comes back replicated on the current mesh);
* `data`: JSON `{'step', 'next_position'}`, the first training-stream position not yet
  consumed on each host (`detection_pipeline.make_train_dataset(start_position=...)`), so a
  resumed run sees exactly the batches an uninterrupted run would have.

It saves every `every_steps` steps, at the end, and when the process gets SIGTERM (the handler
only sets a flag; the training loop calls `should_stop()` after each step, saves and exits
cleanly). `max_to_keep` bounds the number of checkpoints. The config is written as
`<workdir>/config.json` beside them.

A workdir belongs to one configuration. `check_workdir` runs before a trainer writes anything
there: a `config.json` that differs from the new config (compared key by key, dotted paths),
or checkpoints / results without a `config.json`, are a `WorkdirConfigError` listing the
differing keys with their old and new values, so a run pointed at another experiment's folder
neither resumes that experiment's checkpoint nor relabels its results. Two exceptions:

* `RESUME_SAFE_KEYS`, settings that change neither the trained weights nor the results (where
  TFDS records are cached, how often to log or checkpoint, how many checkpoints to keep), may
  differ;
* `config.resume_with_changed_config=True` accepts any difference (it is never compared
  itself).

Every accepted difference is appended to `<workdir>/config_changes.json` (`record_changes`:
step of the newest checkpoint, time, old and new values) before `config.json` is replaced.
`compare_for_evaluation` is the evaluation-side check (launch/evaluate.py).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from safefakes_jax.data import atomic_io


class Checkpointer:
    """Periodic / on-SIGTERM checkpoints of a train state and its data position.

    Args:
      workdir: the run folder; checkpoints go to `<workdir>/checkpoints`.
      every_steps: save when `step % every_steps == 0` (0: only at the end / on SIGTERM).
      max_to_keep: checkpoints kept.
      handle_sigterm: install a SIGTERM handler (main thread only) that requests a save+stop.
      create: create `<workdir>/checkpoints` if missing (False for readers such as
        launch/evaluate.py, which must not create folders).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        every_steps: int = 1000,
        max_to_keep: int = 3,
        handle_sigterm: bool = True,
        create: bool = True,
    ):
        self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), 'checkpoints')
        self.every_steps = int(every_steps)
        self._stop = threading.Event()
        self._previous_handler = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=('state', 'data')
        )
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._stop.set()

    def request_stop(self) -> None:
        """Asks the loop to save and stop (what SIGTERM does)."""
        self._stop.set()

    def should_stop(self) -> bool:
        """True once a stop was requested on any host (a collective when multi-host)."""
        flag = self._stop.is_set()
        if jax.process_count() > 1:
            flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
        return flag

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint, or None."""
        return self.manager.latest_step()

    def restore(self, abstract_state: Any, hint: str = '') -> tuple[Any, int] | None:
        """Restores the newest checkpoint into `abstract_state` (shapes + shardings).

        Args:
          abstract_state: the state's shapes, dtypes and shardings.
          hint: what to do when the checkpoint does not fit, added to the error.

        Returns:
          (state, next_position of this host), or None when there is no checkpoint.

        Raises:
          ValueError: the checkpoint's tree or shapes differ from `abstract_state` (names the
            folder and step).
        """
        step = self.manager.latest_step()
        if step is None:
            return None
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # Orbax reports a tree or shape mismatch in several types.
            raise ValueError(
                f'{self.directory}: checkpoint step {step} does not fit the state to restore'
                f'{" (" + hint + ")" if hint else ""}: {type(e).__name__}: {e}'
            ) from None
        positions = restored.data['next_position']
        return restored.state, int(positions[jax.process_index()])

    def maybe_save(self, step: int, state: Any, next_position: int, force: bool = False) -> bool:
        """Saves at `every_steps` multiples, or when `force`; returns whether it saved."""
        due = force or (self.every_steps > 0 and step % self.every_steps == 0)
        if not due or self.manager.latest_step() == step:
            return False
        positions = np.asarray(multihost_utils.process_allgather(np.int64(next_position)))
        data = {'step': int(step), 'next_position': [int(p) for p in positions.reshape(-1)]}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        return True

    def close(self) -> None:
        """Waits for pending saves, closes the manager, restores the SIGTERM handler."""
        self.manager.wait_until_finished()
        self.manager.close()
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def write_config(workdir: str | os.PathLike, config: Any) -> str:
    """Writes `config` (a ConfigDict) as `<workdir>/config.json` (process 0 only)."""
    path = os.path.join(os.fspath(workdir), 'config.json')
    if jax.process_index() == 0:
        text = (
            config.to_json(indent=2, sort_keys=True)
            if hasattr(config, 'to_json')
            else json.dumps(config, indent=2, sort_keys=True)
        )
        atomic_io.write_text(path, text + '\n')
    return path


# --------------------------------------------------------------------------- workdir configs

CONFIG_FILE = 'config.json'
CHANGES_FILE = 'config_changes.json'
# Never compared: the switch that allows a changed config on resume.
IGNORED_KEYS = frozenset({'resume_with_changed_config'})
# May differ on resume without `resume_with_changed_config`: they change neither the weights a
# run trains nor its results (the TFDS records of a folder are the same wherever they are
# cached; logging and checkpoint frequency do not touch the training stream).
RESUME_SAFE_KEYS = frozenset(
    {'data.tfds_dir', 'train.log_every', 'ckpt.every_steps', 'ckpt.max_to_keep'}
)
# Evaluation refuses a differing value of these: they define the network's shape and the
# anchors its outputs are decoded with (a different width fails to restore; a different anchor
# aspect ratio would silently decode the trained outputs against the wrong anchors).
EVAL_REFUSE_KEYS = frozenset({'model.width', 'model.anchor_aspect_ratio'})
# Evaluation settings are chosen at evaluation time: never reported as a difference.
EVAL_OWN_PREFIXES = ('evals.',)
_ABSENT = '<absent>'


class WorkdirConfigError(ValueError):
    """A workdir that holds another configuration's run (or a run without its config.json)."""


def config_as_dict(config: Any) -> dict[str, Any]:
    """The JSON form of a ConfigDict (tuples become lists), as `config.json` stores it."""
    if hasattr(config, 'to_json'):
        return json.loads(config.to_json(sort_keys=True))
    return json.loads(json.dumps(config, sort_keys=True))


def flatten_config(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """`{'a': {'b': 1}}` -> `{'a.b': 1}` (lists are values, not flattened)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (old value, new value)}` of the keys that differ, sorted by key.

    A key present on one side only has the value `'<absent>'` on the other. `IGNORED_KEYS`
    are never reported.
    """
    a, b = flatten_config(old), flatten_config(new)
    out = {}
    for key in sorted(set(a) | set(b)):
        if key in IGNORED_KEYS:
            continue
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:
            out[key] = (va, vb)
    return out


def format_differences(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    """`key: old -> new; ...` on one line (values as JSON)."""
    return '; '.join(f'{k}: {json.dumps(a)} -> {json.dumps(b)}' for k, (a, b) in diffs.items())


def read_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """`<workdir>/config.json` as a dict, or None when there is none.

    Raises:
      WorkdirConfigError: the file exists but is not a JSON object.
    """
    path = os.path.join(os.fspath(workdir), CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkdirConfigError(
            f'{path}: unreadable ({e}); is {os.fspath(workdir)} a launch/train.py workdir?'
        ) from None
    if not isinstance(data, dict):
        raise WorkdirConfigError(f'{path}: not a JSON object')
    return data


def saved_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps of the finished checkpoints in `<workdir>/checkpoints`, sorted (reads only)."""
    directory = os.path.join(os.fspath(workdir), 'checkpoints')
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name)
        for name in os.listdir(directory)
        if name.isdigit() and os.path.isdir(os.path.join(directory, name))
    )


def check_workdir(workdir: str | os.PathLike, config: Any) -> dict[str, Any] | None:
    """Checks that `workdir` is new or holds a run of `config`; writes nothing.

    Args:
      workdir: the run folder (need not exist).
      config: the new config; `config.resume_with_changed_config` (default False) accepts any
        difference.

    Returns:
      None when there is nothing to record (a new workdir, or the same config), else the
      entry for `record_changes`: `{'step', 'forced', 'changes': {key: {'old', 'new'}}}`
      (plus `'note'` when `config.json` was missing).

    Raises:
      WorkdirConfigError: `workdir` is not a folder; or its `config.json` differs from
        `config` in keys outside `RESUME_SAFE_KEYS`; or it holds checkpoints or a
        `results.json` but no `config.json` (unless `resume_with_changed_config`).
    """
    workdir = os.fspath(workdir)
    if not os.path.exists(workdir):
        return None
    if not os.path.isdir(workdir):
        raise WorkdirConfigError(f'--workdir {workdir} exists and is not a folder')
    allow = bool(config.get('resume_with_changed_config', False))
    steps = saved_steps(workdir)
    step = steps[-1] if steps else 0
    old = read_config(workdir)
    how = (
        'use a new --workdir, or pass --config.resume_with_changed_config=true to continue '
        f'this run with the new values (recorded in {CHANGES_FILE})'
    )
    if old is None:
        holds = [
            what
            for what, present in (
                (f'checkpoints (newest step {step})', bool(steps)),
                ('results.json', os.path.isfile(os.path.join(workdir, 'results.json'))),
            )
            if present
        ]
        if not holds:
            return None
        if not allow:
            raise WorkdirConfigError(
                f'{workdir} holds {" and ".join(holds)} but no {CONFIG_FILE}, so it cannot be '
                f'checked that they belong to this config; {how}'
            )
        return {
            'step': step,
            'forced': True,
            'changes': {},
            'note': f'{CONFIG_FILE} was missing; the run was continued with this config',
        }
    diffs = config_differences(old, config_as_dict(config))
    if not diffs:
        return None
    unsafe = {k: v for k, v in diffs.items() if k not in RESUME_SAFE_KEYS}
    if unsafe and not allow:
        at = f' (checkpoint at step {step})' if steps else ''
        raise WorkdirConfigError(
            f'{workdir} holds a run of another config{at}: {os.path.join(workdir, CONFIG_FILE)} '
            f'differs in {len(unsafe)} key(s): {format_differences(unsafe)}; {how}'
        )
    return {
        'step': step,
        'forced': bool(unsafe),
        'changes': {k: {'old': a, 'new': b} for k, (a, b) in diffs.items()},
    }


def record_changes(workdir: str | os.PathLike, entry: Mapping[str, Any]) -> str:
    """Appends `entry` (from `check_workdir`) to `<workdir>/config_changes.json` (process 0).

    Returns:
      The path of the file.
    """
    path = os.path.join(os.fspath(workdir), CHANGES_FILE)
    if jax.process_index() == 0:
        history = read_changes(workdir)
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
        history.append(dict(entry, time=stamp))
        atomic_io.write_text(path, json.dumps(history, indent=2) + '\n')
    return path


def read_changes(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of `<workdir>/config_changes.json` (empty when there is none)."""
    path = os.path.join(os.fspath(workdir), CHANGES_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding='utf-8') as f:
        history = json.load(f)
    return history if isinstance(history, list) else []


def compare_for_evaluation(
    workdir: str | os.PathLike, config: Any
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """(refused, other) differences between `<workdir>/config.json` and an evaluation config.

    `refused` holds the `EVAL_REFUSE_KEYS` that differ (the network or its anchors), `other`
    every other differing key except the evaluation's own settings (`evals.*`). Both are
    empty when the workdir has no `config.json`.
    """
    old = read_config(workdir)
    if old is None:
        return {}, {}
    diffs = config_differences(old, config_as_dict(config))
    refused = {k: v for k, v in diffs.items() if k in EVAL_REFUSE_KEYS}
    other = {
        k: v
        for k, v in diffs.items()
        if k not in EVAL_REFUSE_KEYS and not k.startswith(EVAL_OWN_PREFIXES)
    }
    return refused, other
