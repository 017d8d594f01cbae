r"""Speed of the GAN anonymizers (DeepPrivacy, CIAGAN, Sun2018) through the dataset engine, and
of their train steps.

Usage:
  python benchmarks/gan_anonymize.py                     # all three GANs, smoke size on CPU
  python benchmarks/gan_anonymize.py --gans ciagan --sizes smoke --images 20 --runs 3
  python benchmarks/gan_anonymize.py --sizes smoke,paper --images 200 --face_batch 256 \
      --train_step=smoke,paper                           # on a GPU: paper sizes too
  python benchmarks/gan_anonymize.py --src cache/synthetic_wider --images 100

`--sizes` defaults to `smoke` on CPU and `smoke,paper` on an accelerator. Per GAN (a line
`== <gan> ==`, then the same lines for each) and generator size (`smoke`: the GAN's training
config's `:smoke` network, configs/deepprivacy_fdf.py, ciagan_celeba.py, sun2018_pipa.py;
`paper`: the paper's, DeepPrivacy's 46.9M-parameter and Sun2018's 41.9M-parameter 128 x 128
networks, CIAGAN's 1,200-identity 128 x 128 one) it prints

* faces/s of the anonymizer through `anonymizers.engine.run` (decode, crop, generate, paste,
  encode, manifest) on `--images` synthetic WIDER images (keypoints from the sidecar), batched
  (`--face_batch` faces per generator call) and one face at a time (`face_batch=1`, one image
  per call); the median of `--runs` runs after an untimed warm-up that compiles the generator.
  Speed does not depend on the weights, so the generator is randomly initialised and saved in a
  temporary folder (never use it to anonymize);
* faces/s of the compiled generator alone (no engine) at `--face_batch` and at 1 face per
  call, which separates what batching buys from the engine's per-image work (sidecar, decode,
  crop, paste, encode);
* the generator's FLOPs per face (XLA cost analysis of the batched call) and the FLOP/s of
  the batched call, to hold against the device's peak.
* with `--train_step=smoke[,paper]`: the train step's median time at the config's batch
  (paper sizes: DeepPrivacy 128, about 85 GB of memory, so a GPU job; CIAGAN 16 pairs x 12
  sub-batches; Sun2018 64) and images/s (examples of the config's batch per second).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import ciagan_celeba, deepprivacy_fdf, sun2018_pipa  # noqa: E402
from safefakes_jax import sharding  # noqa: E402
from safefakes_jax.anonymizers import base, engine  # noqa: E402
from safefakes_jax.data import synthetic  # noqa: E402
from safefakes_jax.models import torch_import  # noqa: E402
from safefakes_jax.train import (  # noqa: E402
    ciagan_step,
    ciagan_trainer,
    deepprivacy_trainer,
    sun2018_trainer,
)
from safefakes_jax.train import state as state_lib  # noqa: E402


class Gan:
    """How to time one GAN: its configs, a random generator folder, its anonymizer, generator
    inputs and train step (subclasses below, one per GAN)."""

    name = ''
    config_module: Any = None

    def size_config(self, size: str):
        return self.config_module.get_config('smoke' if size == 'smoke' else None)

    def random_generator(self, config, out: str) -> str:
        """A randomly initialised generator folder of `config`'s size (for timing only)."""
        raise NotImplementedError

    def create(self, folder: str, face_batch: int, batch_size: int | None = None):
        extra = {} if batch_size is None else {'batch_size': batch_size}
        return base.create(
            self.name, params=folder, keypoints='sidecar', face_batch=face_batch, **extra
        )

    def generator_inputs(self, model, n: int) -> tuple:
        """Inputs of the compiled generator call (after its weights) for `n` faces."""
        raise NotImplementedError

    def train_state_and_step(self, config, mesh):
        """(state, jitted step, sharded random batch) at the config's batch."""
        raise NotImplementedError


class DeepPrivacyGan(Gan):
    """Smoke: configs/deepprivacy_fdf.py:smoke; paper: the 46.9M-parameter 128 x 128 network."""

    name, config_module = 'deepprivacy', deepprivacy_fdf

    def random_generator(self, config, out):
        g, _ = deepprivacy_trainer.build_models(config)
        x = deepprivacy_trainer.example_inputs(config.model.resolution)
        params = jax.jit(g.init)(jax.random.key(0), x['image'], x['keypoints'], x['z'])['params']
        info = {'format': 'deepprivacy', 'width': g.width, 'resolution': g.resolution}
        torch_import.save_converted(out, jax.device_get(params), info, force=True)
        return out

    def generator_inputs(self, model, n):
        r = model.resolution
        return jnp.zeros((n, r, r, 3)), jnp.full((n, 7, 2), 0.5), jnp.zeros((n, 4, 4, 32))

    def train_state_and_step(self, config, mesh):
        g, d = deepprivacy_trainer.build_models(config)
        state = state_lib.create(deepprivacy_trainer.specs(config, g, d), jax.random.key(0), mesh)
        step = deepprivacy_trainer.make_step(config, g, d, mesh)
        b, r = config.data.batch_size, config.model.resolution
        rng = np.random.default_rng(0)
        batch = {
            'image': rng.integers(0, 256, (b, r, r, 3), np.uint8),
            'box': np.tile(np.array([[r // 4, r // 4, 3 * r // 4, 3 * r // 4]], np.int32), (b, 1)),
            'keypoints': rng.uniform(0.2, 0.8, (b, 7, 2)).astype(np.float32),
        }
        return state, step, sharding.shard_batch(batch, mesh, deepprivacy_trainer.BATCH_KEYS)


class CiaganGan(Gan):
    """Smoke: configs/ciagan_celeba.py:smoke; paper: 1,200 identities, 128 x 128, width 1."""

    name, config_module = 'ciagan', ciagan_celeba

    def random_generator(self, config, out):
        g = ciagan_trainer.build_models(config)[0]
        x = ciagan_trainer.example_inputs(g.resolution, g.num_classes)
        # The whole variables dict: params and the spectral-norm batch_stats.
        variables = jax.jit(g.init)(jax.random.key(0), x['image'], x['image'], x['onehot'])
        info = {
            'format': 'ciagan',
            'num_classes': int(g.num_classes),
            'resolution': int(g.resolution),
            'width': float(g.width),
        }
        torch_import.save_converted(out, jax.device_get(variables), info, force=True)
        return out

    def generator_inputs(self, model, n):
        r = model.resolution
        image = jnp.zeros((n, r, r, 3))
        return image, image, jax.nn.one_hot(jnp.zeros(n, jnp.int32), model.num_classes)

    def train_state_and_step(self, config, mesh):
        g, d, s = ciagan_trainer.build_models(config)
        specs = ciagan_trainer.specs(config, g, d, s)
        state = state_lib.create(specs, jax.random.key(0), mesh)
        t = config.train
        step = ciagan_step.make_train_step(
            g,
            d,
            s,
            mesh,
            n_identity=t.identity_steps,
            n_critic=t.critic_steps,
            n_generator=t.generator_steps,
            margin=config.loss.margin,
            identity_weight=config.loss.identity_weight,
        )
        b, r = config.data.batch_size, config.model.resolution
        k = ciagan_step.sub_batches(t.identity_steps, t.critic_steps, t.generator_steps)
        rng = np.random.default_rng(0)
        mask = np.zeros((b, k, r, r, 1), np.uint8)
        mask[:, :, r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 1
        batch = {
            'face': rng.integers(0, 256, (b, k, r, r, 3), np.uint8),
            'landmarks': rng.integers(0, 256, (b, k, r, r, 3), np.uint8),
            'mask': mask,
            'target_face': rng.integers(0, 256, (b, k, r, r, 3), np.uint8),
            'identity': rng.integers(0, config.model.num_classes, (b, k)).astype(np.int32),
            'same': rng.integers(0, 2, (b, k)).astype(np.float32),
        }
        return state, step, sharding.shard_batch(batch, mesh, ciagan_step.BATCH_KEYS)


class Sun2018Gan(Gan):
    """Smoke: configs/sun2018_pipa.py:smoke; paper: the 41.9M-parameter 128 x 128 U-Net."""

    name, config_module = 'sun2018', sun2018_pipa

    def random_generator(self, config, out):
        g, _ = sun2018_trainer.build_models(config)
        x = sun2018_trainer.example_inputs(g.resolution)
        params = jax.jit(g.init)(jax.random.key(0), x['image'], x['landmarks68'])['params']
        info = {'format': 'sun2018', 'width': float(g.width), 'resolution': int(g.resolution)}
        torch_import.save_converted(out, jax.device_get(params), info, force=True)
        return out

    def generator_inputs(self, model, n):
        r = model.resolution
        return jnp.zeros((n, r, r, 3)), jnp.full((n, model.num_landmarks, 2), 0.5)

    def train_state_and_step(self, config, mesh):
        g, d = sun2018_trainer.build_models(config)
        state = state_lib.create(sun2018_trainer.specs(config, g, d), jax.random.key(0), mesh)
        step = sun2018_trainer.make_step(config, g, d, mesh)
        b, r = config.data.batch_size, config.model.resolution
        rng = np.random.default_rng(0)
        batch = {
            'image': rng.integers(0, 256, (b, r, r, 3), np.uint8),
            'box': np.tile(np.array([[r // 4, r // 4, 3 * r // 4, 3 * r // 4]], np.int32), (b, 1)),
            'landmarks68': rng.uniform(0.2, 0.8, (b, 68, 2)).astype(np.float32),
        }
        return state, step, sharding.shard_batch(batch, mesh, sun2018_trainer.BATCH_KEYS)


GANS = {gan.name: gan for gan in (DeepPrivacyGan(), CiaganGan(), Sun2018Gan())}


def engine_faces_per_s(method, src: str, work: str, runs: int) -> tuple[float, int]:
    """Median anonymized faces/s of `method` over `runs` engine runs (after a warm-up)."""
    rates, faces = [], 0
    for run in range(runs + 1):
        dst = os.path.join(work, f'out{run}')
        config = {
            'anonymizer': {'name': method.name},
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
        # Every generated face, also those with a note (`anonymized:no_landmarks`, ...).
        faces = sum(n for r, n in summary.records.items() if base.is_anonymized(r))
        shutil.rmtree(dst, ignore_errors=True)
        if run:  # Run 0 compiles.
            rates.append(faces / seconds)
    return statistics.median(rates), faces


def _compiled(gan: Gan, method, n: int):
    """(apply, weights, inputs) of `method`'s compiled generator call for `n` faces."""
    loaded = method._load()  # (model, weights, ..., apply) for every GAN anonymizer.
    return loaded[-1], loaded[1], gan.generator_inputs(loaded[0], n)


def generator_flops_per_face(gan: Gan, method) -> float | None:
    apply, weights, args = _compiled(gan, method, method.face_batch)
    cost = apply.lower(weights, *args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get('flops')
    return float(flops) / method.face_batch if flops else None


def generator_faces_per_s(gan: Gan, method, n: int, seconds: float = 3.0) -> float:
    """Median faces/s of the compiled generator alone on `n` faces per call (after a
    compiling call; calls repeated for about `seconds`, at least 3)."""
    apply, weights, args = _compiled(gan, method, n)
    jax.block_until_ready(apply(weights, *args))
    times = []
    while len(times) < 3 or sum(times) < seconds:
        start = time.perf_counter()
        jax.block_until_ready(apply(weights, *args))
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def train_step_seconds(gan: Gan, config, steps: int) -> float:
    """Median seconds of `gan`'s train step at the config's batch (after a compiling step)."""
    mesh = sharding.make_mesh()
    state, step, batch = gan.train_state_and_step(config, mesh)
    key = jax.random.wrap_key_data(
        jax.device_put(jax.random.key_data(jax.random.key(1)), sharding.replicated(mesh))
    )
    state, m = step(state, batch, key)  # Compile (and DeepPrivacy's one lazy-penalty step).
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, m = step(state, batch, key)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(gan: Gan, size: str, src: str, work: str, args) -> None:
    """Prints `gan`'s figures at `size` (module docstring)."""
    config = gan.size_config(size)
    folder = gan.random_generator(config, os.path.join(work, f'{gan.name}_{size}'))
    batched = gan.create(folder, args.face_batch)
    rate, faces = engine_faces_per_s(batched, src, work, args.runs)
    flops = generator_flops_per_face(gan, batched)
    line = f'{size}: {faces} faces, batched ({args.face_batch}) {rate:.1f} faces/s'
    if args.single:
        single, _ = engine_faces_per_s(gan.create(folder, 1, 1), src, work, args.runs)
        line += f', one at a time {single:.1f} faces/s ({rate / single:.1f}x)'
    print(line, flush=True)
    alone = generator_faces_per_s(gan, batched, args.face_batch)
    alone_one = generator_faces_per_s(gan, batched, 1)
    line = (
        f'{size}: generator alone, batched ({args.face_batch}) {alone:.1f} faces/s, '
        f'one at a time {alone_one:.1f} faces/s ({alone / alone_one:.1f}x)'
    )
    if flops:
        line += f', {flops / 1e9:.2f} GFLOP/face, {flops * alone / 1e9:.0f} GFLOP/s'
    print(line, flush=True)
    if size in args.train_step.split(','):
        seconds = train_step_seconds(gan, config, args.train_steps)
        b = config.data.batch_size
        print(f'{size}: train step at batch {b}: {seconds:.3f} s ({b / seconds:.1f} img/s)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--gans', default=','.join(GANS), help='comma-separated')
    parser.add_argument('--sizes', help='smoke and/or paper (default: smoke on CPU, both else)')
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
    unknown = [g for g in args.gans.split(',') if g not in GANS]
    if unknown:
        parser.error(f'unknown --gans {unknown}; known: {", ".join(GANS)}')
    gans = [GANS[g] for g in args.gans.split(',')]
    if args.sizes is None:
        args.sizes = 'smoke' if jax.default_backend() == 'cpu' else 'smoke,paper'
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
        for gan in gans:
            print(f'== {gan.name} ==', flush=True)
            for size in args.sizes.split(','):
                bench(gan, size, src, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
