"""Evaluators by name, as big_vision's `evaluators/<type>.py`.

A config lists its evaluations under `config.evals`, one section each:

    config.evals.val = dict(type='wider_ap', every_steps=5000, procedure='single', ...)
    config.evals.final = dict(type='wider_ap', every_steps=0, final=True, ...)

`build(config, context)` imports `safefakes_jax.evaluation.evaluators.<type>` for every
section and calls its `Evaluator(name, section, context)` once per run: whatever an evaluator
needs across evaluations (its val pipeline, the ground truth, compiled functions) is built
there and kept, so that no builder, fingerprint or tf.data pipeline is rebuilt per evaluation.

An evaluator has `every_steps` (0: not periodic), `final` (also run at the end of training)
and `run(state, step) -> Result`: named scalars (written as `<name>/<key>`), named images
(HWC uint8), and, for a final evaluator, the entries it adds to `results.json`. `state` is the
trainer's train state (its networks by name, `train/state.py`); an evaluator reads the network
its section names (`network`, default the trainer's first).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class Context:
    """What evaluators may use: the run's config, its models by network name, the mesh and
    the workdir (None: write nothing)."""

    config: Any
    models: Mapping[str, Any]
    mesh: Any
    workdir: str | None = None


@dataclasses.dataclass
class Result:
    """One evaluation's output.

    Attributes:
      scalars: name -> value.
      images: name -> HWC uint8 picture.
      results: entries for `results.json` (final evaluations).
    """

    scalars: dict[str, float]
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    results: dict[str, Any] = dataclasses.field(default_factory=dict)


class Evaluator(Protocol):
    """The interface of every `evaluators.<type>.Evaluator`."""

    name: str
    every_steps: int
    final: bool

    def run(self, state: Any, step: int) -> Result: ...


def build_one(name: str, section: Mapping[str, Any], context: Context) -> Evaluator:
    """The evaluator of one `config.evals.<name>` section.

    Raises:
      ValueError: a section without `type`, or an unknown type (naming the section).
    """
    kind = section.get('type')
    if not kind:
        raise ValueError(f'config.evals.{name}: no type')
    try:
        module = importlib.import_module(f'{__name__}.{kind}')
    except ModuleNotFoundError as e:
        if e.name != f'{__name__}.{kind}':
            raise
        raise ValueError(f'config.evals.{name}: unknown evaluator type {kind!r}') from None
    return module.Evaluator(name, section, context)


def build(evals: Mapping[str, Any], context: Context) -> dict[str, Evaluator]:
    """Every evaluator of a config's `evals` section, by name."""
    return {name: build_one(name, section, context) for name, section in evals.items()}
