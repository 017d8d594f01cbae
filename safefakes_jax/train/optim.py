"""Optimisers and learning-rate schedules, built from one config section per network.

`build(section, total_steps)` reads a `config.optim.<network>` section:

* `name`: `'sgd'` (momentum `momentum`) or `'adam'` (`b1`, `b2`, `eps`);
* `lr` and the step schedule: times `decay_factor` at each `decay_fractions` point of the run
  (DSFD, dsfd.md §8: x0.1 at 40k and 50k of 60k; shorter runs scale the points with their
  length); `()` keeps the rate constant (the GANs);
* `warmup_steps`: a linear warm-up first (0: none);
* `weight_decay`: PyTorch-style coupled decay, added to the gradient (times the parameter)
  before the update, on every parameter (0: none);
* `clip_norm`: clipping of the global gradient norm first (0: none).

Missing keys take the defaults of `DEFAULTS`. The DSFD paper configs are SGD 2.5e-4, momentum
0.9, decay 5e-4, x0.1 at 2/3 and 5/6 of the run; the CPU `:smoke` configs use Adam with warm-up
and clipping to train a small DSFD from scratch in minutes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import optax

# Decay points as fractions of the run (paper: 40k and 50k of 60k iterations).
DECAY_FRACTIONS = (40_000 / 60_000, 50_000 / 60_000)
NAMES = ('sgd', 'adam')
DEFAULTS: dict[str, Any] = {
    'name': 'sgd',
    'lr': 1e-3,
    'momentum': 0.9,
    'b1': 0.9,
    'b2': 0.999,
    'eps': 1e-8,
    'weight_decay': 0.0,
    'decay_fractions': (),
    'decay_factor': 0.1,
    'warmup_steps': 0,
    'clip_norm': 0.0,
}


def lr_schedule(
    base_lr: float,
    total_steps: int,
    decay_fractions: Sequence[float] = DECAY_FRACTIONS,
    decay_factor: float = 0.1,
    warmup_steps: int = 0,
) -> optax.Schedule:
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


def build(
    section: Mapping[str, Any], total_steps: int
) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """(schedule, optimiser) of one `config.optim.<network>` section (module docstring).

    Raises:
      ValueError: an unknown optimiser name or key (naming it).
    """
    section = dict(section)
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown optimiser keys {unknown} (known: {sorted(DEFAULTS)})')
    o = DEFAULTS | section
    schedule = lr_schedule(
        o['lr'], total_steps, tuple(o['decay_fractions']), o['decay_factor'], int(o['warmup_steps'])
    )
    if o['name'] == 'sgd':
        update = optax.sgd(schedule, momentum=o['momentum'] or None)
    elif o['name'] == 'adam':
        update = optax.adam(schedule, b1=o['b1'], b2=o['b2'], eps=o['eps'])
    else:
        raise ValueError(f'unknown optimizer {o["name"]!r} (one of {", ".join(NAMES)})')
    chain = []
    if o['clip_norm'] > 0:
        chain.append(optax.clip_by_global_norm(o['clip_norm']))
    if o['weight_decay'] > 0:
        chain.append(optax.add_decayed_weights(o['weight_decay']))
    return schedule, optax.chain(*chain, update)
