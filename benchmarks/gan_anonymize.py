r"""Speed of the DeepPrivacy anonymizer through the dataset engine, and of its train step.

Usage:
  python benchmarks/gan_anonymize.py                     # smoke and paper size, CPU-sized
  python benchmarks/gan_anonymize.py --sizes paper --images 200 --face_batch 256 \
      --train_step=paper                                # on a GPU
  python benchmarks/gan_anonymize.py --src cache/synthetic_wider --images 100

For each generator size (`smoke`: configs/deepprivacy_fdf.py:smoke; `paper`: the 46.9M-parameter
128 x 128 network) it prints

* faces/s of `deepprivacy` through `anonymizers.engine.run` (decode, crop, generate, paste,
  encode, manifest) on `--images` synthetic WIDER images, batched (`--face_batch` faces per
  generator call) and one face at a time (`face_batch=1`, one image per call); the median of
  `--runs` runs after an untimed warm-up that compiles the generator. Speed does not depend on
  the weights, so the generator is randomly initialised (never use it to anonymize);
* faces/s of the compiled generator alone (no engine) at `--face_batch` and at 1 face per
  call, which separates what batching buys from the engine's per-image work (sidecar, decode,
  crop, paste, encode);
* the generator's FLOPs per face (XLA cost analysis of the batched call) and the FLOP/s of
  the batched call, to hold against the device's peak.
* with `--train_step=smoke[,paper]`: the DeepPrivacy train step's median time at the config's
  batch (paper size: 128; about 85 GB of memory, so a GPU job) and images/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import deepprivacy_fdf  # noqa: E402
from safefakes_jax import sharding  # noqa: E402
from safefakes_jax.anonymizers import base, engine  # noqa: E402
from safefakes_jax.data import synthetic  # noqa: E402
from safefakes_jax.models import torch_import  # noqa: E402
from safefakes_jax.train import deepprivacy_trainer  # noqa: E402
from safefakes_jax.train import state as state_lib  # noqa: E402


def size_config(name: str):
    return deepprivacy_fdf.get_config('smoke' if name == 'smoke' else None)


def random_generator(config, out: str) -> str:
    """A randomly initialised generator folder of `config`'s size (for timing only)."""
    g, _ = deepprivacy_trainer.build_models(config)
    x = deepprivacy_trainer.example_inputs(config.model.resolution)
    params = jax.jit(g.init)(jax.random.key(0), x['image'], x['keypoints'], x['z'])['params']
    info = {'format': 'deepprivacy', 'width': g.width, 'resolution': g.resolution}
    torch_import.save_converted(out, jax.device_get(params), info, force=True)
    return out


def engine_faces_per_s(method, src: str, work: str, runs: int) -> tuple[float, int]:
    """Median anonymized faces/s of `method` over `runs` engine runs (after a warm-up)."""
    rates, faces = [], 0
    for run in range(runs + 1):
        dst = os.path.join(work, f'out{run}')
        config = {
            'anonymizer': {'name': 'deepprivacy'},
            'src': src,
            'dst': dst,
            'splits': ('train',),
            'workers': 1,
            'seed': 0,
            'image_format': 'jpeg',
            'jpeg_quality': 95,
            'overwrite': True,
        }
        start = time.perf_counter()
        summary = engine.run(config, progress=False, anonymizer=method)
        seconds = time.perf_counter() - start
        faces = int(summary.records['anonymized'])
        shutil.rmtree(dst, ignore_errors=True)
        if run:  # Run 0 compiles.
            rates.append(faces / seconds)
    return statistics.median(rates), faces


def _generator_inputs(model, n: int):
    r = model.resolution
    return jnp.zeros((n, r, r, 3)), jnp.full((n, 7, 2), 0.5), jnp.zeros((n, 4, 4, 32))


def generator_flops_per_face(method) -> float | None:
    model, params, _, apply = method._load()
    cost = apply.lower(params, *_generator_inputs(model, method.face_batch)).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get('flops')
    return float(flops) / method.face_batch if flops else None


def generator_faces_per_s(method, n: int, seconds: float = 3.0) -> float:
    """Median faces/s of the compiled generator alone on `n` faces per call (after a
    compiling call; calls repeated for about `seconds`, at least 3)."""
    model, params, _, apply = method._load()
    args = _generator_inputs(model, n)
    jax.block_until_ready(apply(params, *args))
    times = []
    while len(times) < 3 or sum(times) < seconds:
        start = time.perf_counter()
        jax.block_until_ready(apply(params, *args))
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def train_step_seconds(config, steps: int) -> float:
    mesh = sharding.make_mesh()
    g, d = deepprivacy_trainer.build_models(config)
    state = state_lib.create(deepprivacy_trainer.specs(config, g, d), jax.random.key(0), mesh)
    step = deepprivacy_trainer.make_step(config, g, d, mesh)
    b, r = config.data.batch_size, config.model.resolution
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch(
        {
            'image': rng.integers(0, 256, (b, r, r, 3), np.uint8),
            'box': np.tile(np.array([[r // 4, r // 4, 3 * r // 4, 3 * r // 4]], np.int32), (b, 1)),
            'keypoints': rng.uniform(0.2, 0.8, (b, 7, 2)).astype(np.float32),
        },
        mesh,
        ('image', 'box', 'keypoints'),
    )
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    state, m = step(state, batch, key)  # Compile (and one lazy-penalty step).
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, batch, key)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='smoke,paper')
    parser.add_argument('--src', help='a WIDER-layout folder (default: synthetic, temporary)')
    parser.add_argument('--images', type=int, default=20)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--face_batch', type=int, default=64)
    parser.add_argument(
        '--single',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='also time one face at a time',
    )
    parser.add_argument(
        '--train_step',
        default='',
        help='sizes whose train step to time, e.g. smoke or smoke,paper (paper at batch 128 '
        'needs about 85 GB on CPU: a GPU job)',
    )
    parser.add_argument('--train_steps', type=int, default=5)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f'device: {device.platform} {device.device_kind} x{jax.device_count()}')
    work = tempfile.mkdtemp(prefix='gan_bench_')
    try:
        src = os.path.join(work, 'wider')
        if args.src:
            from benchmarks.anonymize import subset

            subset(args.src, src, range(args.images))
        else:
            synthetic.generate(src, args.images, 0, seed=0, workers=2, progress=False, width=640)
        for name in args.sizes.split(','):
            config = size_config(name)
            folder = random_generator(config, os.path.join(work, f'gen_{name}'))
            batched = base.create(
                'deepprivacy', params=folder, keypoints='sidecar', face_batch=args.face_batch
            )
            rate, faces = engine_faces_per_s(batched, src, work, args.runs)
            flops = generator_flops_per_face(batched)
            line = f'{name}: {faces} faces, batched ({args.face_batch}) {rate:.1f} faces/s'
            if args.single:
                one = base.create(
                    'deepprivacy', params=folder, keypoints='sidecar', face_batch=1, batch_size=1
                )
                single, _ = engine_faces_per_s(one, src, work, args.runs)
                line += f', one at a time {single:.1f} faces/s ({rate / single:.1f}x)'
            print(line, flush=True)
            alone = generator_faces_per_s(batched, args.face_batch)
            alone_one = generator_faces_per_s(batched, 1)
            line = (
                f'{name}: generator alone, batched ({args.face_batch}) {alone:.1f} faces/s, '
                f'one at a time {alone_one:.1f} faces/s ({alone / alone_one:.1f}x)'
            )
            if flops:
                line += f', {flops / 1e9:.2f} GFLOP/face, {flops * alone / 1e9:.0f} GFLOP/s'
            print(line, flush=True)
            if name in args.train_step.split(','):
                seconds = train_step_seconds(config, args.train_steps)
                b = config.data.batch_size
                print(f'{name}: train step at batch {b}: {seconds:.3f} s ({b / seconds:.1f} img/s)')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
