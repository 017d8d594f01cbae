"""Train state, optimiser and learning-rate schedule of the DSFD detector trainer.

The state is a `flax.struct.dataclass` pytree (`step`, `params`, `opt_state`) with the optax
transform as a static field, so it goes through `jax.jit`, orbax and sharding as it is.

Optimiser (dsfd.md §8, yx `train.py`): SGD with momentum 0.9 and weight decay 5e-4 on *all*
parameters, PyTorch style (the decay is added to the gradient before the momentum). The
learning rate is a step schedule: the base rate (Safe Fakes: 2.5e-4 at batch 4), times 0.1 at
40k and again at 50k of 60k iterations. Shorter runs scale the decay points with their length
(e.g. 5,000 and 6,250 of 7,500).

Options beyond the paper (off in the paper configs; the CPU `:smoke` configs use them to train
a small DSFD from scratch in minutes): a linear learning-rate warm-up, clipping of the global
gradient norm, and Adam (with the same coupled weight decay) instead of SGD.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from safefakes_jax.sharding import replicated

# Decay points as fractions of the run (paper: 40k and 50k of 60k iterations).
DECAY_FRACTIONS = (40_000 / 60_000, 50_000 / 60_000)


@flax.struct.dataclass
class TrainState:
    """Detector training state.

    Attributes:
      step: int32 scalar, optimiser steps taken.
      params: the model parameters (float32).
      opt_state: the optax state.
      tx: the optax transform (static).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def apply_gradients(self, grads: Any) -> TrainState:
        """One optimiser update; returns the new state."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def lr_schedule(base_lr: float, total_steps: int,
                decay_fractions: Sequence[float] = DECAY_FRACTIONS,
                decay_factor: float = 0.1, warmup_steps: int = 0) -> optax.Schedule:
    """Step decay: `base_lr`, times `decay_factor` at each `fraction * total_steps`.

    Args:
      base_lr: the initial learning rate.
      total_steps: the run length in optimiser steps.
      decay_fractions: where to decay, as fractions of `total_steps`.
      decay_factor: the factor applied at each decay point.
      warmup_steps: if > 0, the rate rises linearly from `base_lr / warmup_steps` (step 0) to
        `base_lr` (step `warmup_steps - 1`) first.

    Returns:
      An optax schedule (step -> learning rate).
    """
    boundaries = {max(1, int(round(f * total_steps))): decay_factor for f in decay_fractions}
    decay = optax.piecewise_constant_schedule(base_lr, boundaries)
    if warmup_steps <= 0:
        return decay

    def schedule(step):
        ramp = jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps)
        return ramp * decay(step)

    return schedule


def make_optimizer(schedule: optax.Schedule, momentum: float = 0.9,
                   weight_decay: float = 5e-4, *, name: str = 'sgd',
                   clip_norm: float = 0.0) -> optax.GradientTransformation:
    """PyTorch-style (coupled) weight decay on every parameter, then SGD or Adam.

    Args:
      schedule: the learning-rate schedule.
      momentum: SGD momentum (Adam: its b1).
      weight_decay: added to the gradient (times the parameter) before the update.
      name: 'sgd' (the paper) or 'adam'.
      clip_norm: if > 0, the global gradient norm is clipped to it first.

    Returns:
      The optax transform.
    """
    if name == 'sgd':
        update = optax.sgd(schedule, momentum=momentum)
    elif name == 'adam':
        update = optax.adam(schedule, b1=momentum)
    else:
        raise ValueError(f'unknown optimizer {name!r} (sgd, adam)')
    clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    return optax.chain(*clip, optax.add_decayed_weights(weight_decay), update)


def optimizer_from_config(train: Any) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """(schedule, optimiser) of a config's `train` section (`configs/dsfd_base.py`)."""
    schedule = lr_schedule(train.lr, train.steps, train.decay_fractions,
                           warmup_steps=train.get('warmup_steps', 0))
    tx = make_optimizer(schedule, train.momentum, train.weight_decay,
                        name=train.get('optimizer', 'sgd'), clip_norm=train.get('clip_norm', 0.0))
    return schedule, tx


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       image_size: int, mesh: Mesh) -> TrainState:
    """Initialises the model and optimiser, born replicated on `mesh` (jit out_shardings).

    Args:
      model: the detector (called with [1, S, S, 3] float32 images).
      tx: the optimiser.
      rng: the init key.
      image_size: S.
      mesh: the device mesh.

    Returns:
      A `TrainState` at step 0.

    The init uses the non-partitionable threefry: the parameters are replicated, so the
    partitionable variant buys nothing here, and XLA:CPU compiles the DSFD init about 4x faster
    without it (7 s instead of 28 s at width 1/16). The values are as deterministic either way.
    """

    init = functools.partial(_init, model, tx, image_size)
    with jax.threefry_partitionable(False):
        return jax.jit(init, out_shardings=replicated(mesh))(rng)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, image_size: int,
                         mesh: Mesh) -> TrainState:
    """The shape/dtype/sharding skeleton of `create_train_state` (restore target)."""
    shapes = jax.eval_shape(functools.partial(_init, model, tx, image_size), jax.random.key(0))
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        shapes)


def _init(model: nn.Module, tx: optax.GradientTransformation, image_size: int,
          key: jax.Array) -> TrainState:
    params = model.init(key, jnp.zeros((1, image_size, image_size, 3), jnp.float32))['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      tx=tx)


def num_params(params: Any) -> int:
    """The number of parameters in a pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
