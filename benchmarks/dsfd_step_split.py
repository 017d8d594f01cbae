"""Where the DSFD train step spends its time: network forward + backward vs matching + loss.

  python benchmarks/dsfd_step_split.py                    # smoke case, 10 steps x 3 repeats
  python benchmarks/dsfd_step_split.py --cases smoke,mid --steps 5

Three jit-compiled programs on the same batches (random images, 1..8 random faces each):

* `full`: the real train step (`detector_step.make_train_step`): forward, matching of both
  shots, multibox loss with hard-negative mining, backward, optimiser update;
* `network`: the same forward + backward + update with the loss replaced by a plain sum of the
  outputs (no matching, no mining);
* `matching+loss`: matching and the multibox loss of both shots on fixed network outputs (no
  network), i.e. what `full` adds to `network`;
* `mining`: the hard-negative mask alone (`multibox_loss.hard_negative_mask`, both shots).

Prints the median time of each (medians of `--repeats` runs of `--steps` steps) and their
shares of `full`. Cases: `smoke` (`dsfd_original.py:smoke`: width 1/8, 256 px, batch 8) and
`mid` (width 1/4, 640 px, batch 2: the paper's anchor count, 34,125 per shot).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.dsfd_train_step import synthetic_batch  # noqa: E402
from configs import dsfd_original  # noqa: E402
from safefakes_jax import sharding  # noqa: E402
from safefakes_jax.detection import anchors, matching, multibox_loss  # noqa: E402
from safefakes_jax.models import dsfd  # noqa: E402
from safefakes_jax.train import detector_step, detector_trainer  # noqa: E402
from safefakes_jax.train import state as state_lib  # noqa: E402

CASES = {'smoke': dict(width=0.125, size=256, batch=8), 'mid': dict(width=0.25, size=640, batch=2)}


def timed(fn, args_list, steps: int, repeats: int) -> float:
    """Median over `repeats` of the mean seconds per call over `steps` calls."""
    out = fn(*args_list[0])
    jax.block_until_ready(out)  # Compile + warm up.
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(steps):
            out = fn(*args_list[k % len(args_list)])
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs)


def run_case(name: str, steps: int, repeats: int) -> None:
    case = CASES[name]
    config = dsfd_original.get_config('smoke')
    size, batch_size = case['size'], case['batch']
    mesh = sharding.make_mesh(1)
    model = dsfd.DSFD(width=case['width'])
    config.data.image_size = size
    networks, schedule = detector_trainer.specs(config, model)
    rng = np.random.default_rng(0)
    host = [synthetic_batch(rng, batch_size, size, config.data.max_boxes) for _ in range(2)]
    batches = [detector_step.shard_batch(b, mesh) for b in host]
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))

    def fresh_state():
        return state_lib.create(networks, jax.random.key(0), mesh)

    full_step = detector_step.make_train_step(model, schedule, mesh, image_size=size)
    state = fresh_state()

    def full(batch):
        nonlocal state
        state, metrics = full_step(state, batch, key)
        return metrics['loss']

    def network_loss(params, images):
        out = model.apply({'params': params}, dsfd.preprocess(images), train=True)
        return sum(jnp.sum(v.astype(jnp.float32)) for v in out.values()) * 1e-6

    @jax.jit
    def network_step(s, batch):
        net = s.nets[detector_step.NETWORK]
        grads = jax.grad(network_loss)(net.params, batch['image'])
        return s.update(
            **{detector_step.NETWORK: net.apply_gradients(grads)}
        ).next_step(), optax.tree.norm(grads)

    nstate = fresh_state()

    def network(batch):
        nonlocal nstate
        nstate, norm = network_step(nstate, batch)
        return norm

    first, second = anchors.shot_anchors(size)
    outputs = jax.jit(lambda p, x: model.apply({'params': p}, dsfd.preprocess(x)))(
        fresh_state().nets[detector_step.NETWORK].params, batches[0]['image']
    )

    @jax.jit
    def matching_loss(out, batch):
        total = 0.0
        for shot, anc in (('1', first), ('2', second)):
            boxes = batch['boxes'].astype(jnp.float32) / size
            loc_t, labels = matching.match_batch(boxes, batch['box_mask'], jnp.asarray(anc))
            loc, conf = multibox_loss.multibox_loss(
                out['loc' + shot], out['conf' + shot], loc_t, labels
            )
            total = total + loc + conf
        return total

    labels = {}
    for shot, anc in (('1', first), ('2', second)):
        boxes = batches[0]['boxes'].astype(jnp.float32) / size
        labels[shot] = matching.match_batch(boxes, batches[0]['box_mask'], jnp.asarray(anc))[1]

    @jax.jit
    def mining(out):
        return [multibox_loss.hard_negative_mask(out['conf' + s], labels[s]) for s in '12']

    t_full = timed(full, [(b,) for b in batches], steps, repeats)
    t_net = timed(network, [(b,) for b in batches], steps, repeats)
    t_match = timed(matching_loss, [(outputs, b) for b in batches], steps, repeats)
    t_mine = timed(mining, [(outputs,)], steps, repeats)
    n_anchors = len(second)
    print(
        f'{name}: width {case["width"]}, {size} px, batch {batch_size}, {n_anchors} anchors '
        f'per shot ({jax.devices()[0].platform}, {steps} steps x {repeats} repeats, medians)'
    )
    for label, t in (
        ('full step', t_full),
        ('network fwd+bwd+update', t_net),
        ('matching + loss (both shots)', t_match),
        ('hard-negative mining (both shots)', t_mine),
    ):
        print(f'  {label:36s} {t * 1e3:9.1f} ms  {100 * t / t_full:5.1f}% of the full step')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', default='smoke', help='comma-separated: smoke, mid')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    for name in args.cases.split(','):
        run_case(name, args.steps, args.repeats)


if __name__ == '__main__':
    main()
