"""Speed of the jitted DSFD train step (compile time, step time, images/s, FLOP/s).

Usage:
  python benchmarks/dsfd_train_step.py                       # paper and smoke cases
  python benchmarks/dsfd_train_step.py --cases smoke         # the smoke model only
  python benchmarks/dsfd_train_step.py --cases paper --steps 2 --bf16

Two cases: `paper`, the paper's model (`DSFD()`, width 1.0) at 640 x 640, batch 4, and
`smoke`, the width, image size and batch of `configs/dsfd_original.py:smoke`. Each builds the
train state and the jitted step (`detector_step.make_train_step`) on a mesh of all local
devices, feeds synthetic batches with the pipeline's static shapes (uint8 images, a few random
valid boxes per image, x1 y1 x2 y2 in pixels, padded to `max_boxes`), compiles the step
(timed), runs 2 warm-up steps, then times `--steps` steps one by one (`jax.block_until_ready`)
and prints one line per case, e.g.
`dsfd_train_step[paper 640 b4]: compile 95.2 s, step 12.3 s (median of 5), 0.33 images/s,
1.2 TFLOP/step, 0.10 TFLOP/s on 1 cpu devices (cpu)`.
FLOP/step is XLA's cost analysis of the lowered step (`step_flops`; 'n/a' when none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import dsfd_original  # noqa: E402
from safefakes_jax import sharding  # noqa: E402
from safefakes_jax.models import dsfd  # noqa: E402
from safefakes_jax.train import detector_step, detector_trainer  # noqa: E402
from safefakes_jax.train import state as state_lib  # noqa: E402

WARMUP_STEPS = 2
DEFAULT_STEPS = {'paper': 5, 'smoke': 10}


def case_config(name: str) -> ml_collections.ConfigDict:
    """The config of a case: `configs/dsfd_original.py` (paper) or its `:smoke` variant."""
    if name not in DEFAULT_STEPS:
        raise ValueError(f'unknown case {name!r} (paper, smoke)')
    return dsfd_original.get_config('smoke' if name == 'smoke' else None)


def synthetic_batch(
    rng: np.random.Generator, batch_size: int, size: int, max_boxes: int, max_faces: int = 8
) -> dict[str, np.ndarray]:
    """Random uint8 images and 1..max_faces random valid boxes per image (padded, masked)."""
    image = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    boxes = np.zeros((batch_size, max_boxes, 4), np.float32)
    mask = np.zeros((batch_size, max_boxes), bool)
    for b in range(batch_size):
        n = int(rng.integers(1, min(max_faces, max_boxes) + 1))
        side = np.exp(rng.uniform(np.log(16), np.log(size / 2), n))
        x1 = rng.uniform(0, 1, n) * (size - side)
        y1 = rng.uniform(0, 1, n) * (size - side)
        boxes[b, :n] = np.stack([x1, y1, x1 + side, y1 + side], -1)
        mask[b, :n] = True
    return {'image': image, 'boxes': boxes, 'box_mask': mask}


def _flops(stage) -> float | None:
    try:
        cost = stage.cost_analysis()
    except Exception:  # Some backends do not implement it.
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = cost.get('flops') if isinstance(cost, dict) else None
    return float(flops) if flops is not None and flops > 0 else None


def step_flops(lowered, compiled, platform: str) -> float | None:
    """FLOP of one step from XLA's cost analysis, or None where it has no honest count.

    The lowered (not yet compiled) step's analysis is preferred; on CPU it agrees with the
    compiled one within 2%. On GPU the lowered step has none, and the compiled step's omits
    the convolutions, which become cuDNN custom calls (it reports ~15 GFLOP for the paper
    step, whose CPU count is 4.36 TFLOP), so GPU runs print 'n/a': take the FLOP/step of the
    same case on CPU (README, "Benchmarks").
    """
    flops = _flops(lowered)
    if flops is None and platform != 'gpu':
        flops = _flops(compiled)
    return flops


def flop_str(x: float) -> str:
    for unit, scale in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6)):
        if x >= scale:
            return f'{x / scale:.3g} {unit}FLOP'
    return f'{x:.3g} FLOP'


def run_case(name: str, steps: int, bf16: bool, seed: int = 0) -> str:
    cfg = case_config(name)
    size, batch_size = cfg.data.image_size, cfg.data.batch_size
    mesh = sharding.make_mesh()
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f'batch {batch_size} is not divisible by {n_dev} devices')
    model = dsfd.DSFD(width=cfg.model.width, dtype=jnp.bfloat16 if bf16 else jnp.float32)
    networks, schedule = detector_trainer.specs(cfg, model)

    start = time.perf_counter()
    state = state_lib.create(networks, jax.random.key(seed), mesh)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    step_fn = detector_trainer.make_step(cfg, model, schedule, mesh)
    rng = jax.device_put(jax.random.key(seed + 1), sharding.replicated(mesh))
    np_rng = np.random.default_rng(seed)
    batches = [
        detector_step.shard_batch(
            synthetic_batch(np_rng, batch_size, size, cfg.data.max_boxes), mesh
        )
        for _ in range(2)
    ]

    start = time.perf_counter()
    lowered = step_fn.lower(state, batches[0], rng)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    platform = mesh.devices.flat[0].platform
    flops = step_flops(lowered, compiled, platform)

    times = []
    for i in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batches[i % 2], rng)
        jax.block_until_ready((state, metrics))
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    loss = float(metrics['loss'])
    if not np.isfinite(loss):
        raise FloatingPointError(f'{name}: non-finite loss {loss}')
    step_s = statistics.median(times)
    print(
        f'{name}: init {init_s:.1f} s, steps '
        + ', '.join(f'{t:.3f}' for t in times)
        + f' s, last loss {loss:.3f}',
        file=sys.stderr,
    )

    dev = mesh.devices.flat[0]
    kind = getattr(dev, 'device_kind', platform)
    flop_part = (
        f'{flop_str(flops)}/step, {flop_str(flops / step_s)}/s'
        if flops
        else 'n/a FLOP/step, n/a FLOP/s'
    )
    tag = f'{name} {size} b{batch_size}' + (' bf16' if bf16 else '')
    if name == 'smoke':
        tag += f' w{cfg.model.width:g}'
    return (
        f'dsfd_train_step[{tag}]: compile {compile_s:.1f} s, step {step_s:.3f} s '
        f'(median of {steps}), {batch_size / step_s:.2f} images/s, {flop_part} on '
        f'{n_dev} {platform} devices ({kind})'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', default='paper,smoke', help='comma-separated: paper,smoke')
    parser.add_argument(
        '--steps', type=int, default=0, help='timed steps per case (default: 5 paper, 10 smoke)'
    )
    parser.add_argument('--bf16', action='store_true', help='bfloat16 compute (params float32)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(',') if c.strip()]
    for name in cases:
        case_config(name)  # Fail early on a bad name.
    for name in cases:
        steps = args.steps or DEFAULT_STEPS[name]
        print(run_case(name, steps, args.bf16, args.seed), flush=True)


if __name__ == '__main__':
    main()
