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
"""

from __future__ import annotations

import json
import os
import signal
import threading
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
    """

    def __init__(self, workdir: str | os.PathLike, every_steps: int = 1000, max_to_keep: int = 3,
                 handle_sigterm: bool = True):
        self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), 'checkpoints')
        self.every_steps = int(every_steps)
        self._stop = threading.Event()
        self._previous_handler = None
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=('state', 'data'))
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

    def restore(self, abstract_state: Any) -> tuple[Any, int] | None:
        """Restores the newest checkpoint into `abstract_state` (shapes + shardings).

        Returns:
          (state, next_position of this host), or None when there is no checkpoint.
        """
        step = self.manager.latest_step()
        if step is None:
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        positions = restored.data['next_position']
        return restored.state, int(positions[jax.process_index()])

    def maybe_save(self, step: int, state: Any, next_position: int, force: bool = False) -> bool:
        """Saves at `every_steps` multiples, or when `force`; returns whether it saved."""
        due = force or (self.every_steps > 0 and step % self.every_steps == 0)
        if not due or self.manager.latest_step() == step:
            return False
        positions = np.asarray(multihost_utils.process_allgather(np.int64(next_position)))
        data = {'step': int(step), 'next_position': [int(p) for p in positions.reshape(-1)]}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)), force=True)
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
        text = config.to_json(indent=2, sort_keys=True) if hasattr(config, 'to_json') \
            else json.dumps(config, indent=2, sort_keys=True)
        atomic_io.write_text(path, text + '\n')
    return path
