"""CIAGAN training on the shared loop (`loop.py`): its three networks, step, input, evaluator.

`train_and_evaluate(config, workdir)` trains `models.ciagan.Generator` against its critic
`ciagan.Discriminator` and the identity network `siamese_resnet.SiameseResNet` with the step of
`ciagan_step.py` on face pairs (`data/ciagan_pairs.py`) from `config.data`: a WIDER-layout
folder with a landmarks sidecar (`source='wider'`: the synthetic set, built in memory) or a
`CiaganFaces` file (`source='npz'`: `tools/prepare_ciagan_faces.py`, e.g. CelebA).
Checkpoints (spectral-norm `u` / `v` and BatchNorm statistics included: they are the networks'
`batch_stats`), resume, logging, the NaN check and the evaluators (`config.evals`, e.g.
`ciagan_faces`) come from the loop. At the end the generator (no EMA: CIAGAN keeps none) is
exported to `<workdir>/generator`, where the `ciagan` anonymizer loads it.

  python launch/train.py --config=configs/ciagan_celeba.py:smoke --workdir=/tmp/ciagan_smoke
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from safefakes_jax import sharding
from safefakes_jax.data import ciagan_pairs, ciagan_sets
from safefakes_jax.models import ciagan, siamese_resnet
from safefakes_jax.train import ciagan_step, gan_training, loop, optim
from safefakes_jax.train import state as state_lib

GENERATOR = ciagan_step.GENERATOR
DISCRIMINATOR = ciagan_step.DISCRIMINATOR
IDENTITY = ciagan_step.IDENTITY
EXPORT_DIR = gan_training.EXPORT_DIR


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else jnp.float32


def build_models(config: ml_collections.ConfigDict):
    """(generator, discriminator, identity network) of `config.model`."""
    m, dt = config.model, _dtype(config)
    return (
        ciagan.Generator(
            num_classes=m.num_classes, resolution=m.resolution, width=m.width, dtype=dt
        ),
        ciagan.Discriminator(resolution=m.resolution, width=m.width, dtype=dt),
        siamese_resnet.SiameseResNet(num_classes=m.num_classes, width=m.identity_width, dtype=dt),
    )


def example_inputs(resolution: int, num_classes: int, n: int = 1) -> dict[str, jnp.ndarray]:
    """Zero inputs of the networks' shapes (for init and shape checks)."""
    image = jnp.zeros((n, resolution, resolution, 3), jnp.float32)
    return {'image': image, 'onehot': jnp.zeros((n, num_classes), jnp.float32)}


def specs(config: ml_collections.ConfigDict, generator, discriminator, identity_net):
    """The three networks of the train state and their optimisers (no EMA)."""
    x = example_inputs(config.model.resolution, config.model.num_classes)
    steps = int(config.train.steps)
    txs = {name: optim.build(config.optim[name], steps)[1] for name in config.optim}
    return {
        GENERATOR: state_lib.Spec(
            lambda k: generator.init(k, x['image'], x['image'], x['onehot']), txs[GENERATOR]
        ),
        DISCRIMINATOR: state_lib.Spec(
            lambda k: discriminator.init(k, x['image'], x['image']), txs[DISCRIMINATOR]
        ),
        IDENTITY: state_lib.Spec(lambda k: identity_net.init(k, x['image']), txs[IDENTITY]),
    }


def summary_networks(config: ml_collections.ConfigDict) -> dict[str, tuple[str, Any, Any]]:
    """`tools/model_summary.py`'s view: name -> (description, module, init arguments)."""
    g, d, s = build_models(config)
    r, nc = g.resolution, g.num_classes
    image = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
    onehot = jax.ShapeDtypeStruct((1, nc), jnp.float32)
    key = jax.random.key(0)
    return {
        'generator': (
            f'CIAGAN Generator({nc} identities, width={g.width}) at {r}x{r}',
            g,
            lambda: (key, image, image, onehot),
        ),
        'discriminator': (
            f'CIAGAN Discriminator(width={d.width}) at {r}x{r}',
            d,
            lambda: (key, image, image),
        ),
        'identity': (
            f'CIAGAN SiameseResNet({nc}, width={s.width}) at {r}x{r}',
            s,
            lambda: (key, image),
        ),
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains CIAGAN as `config` says and evaluates it (module docstring).

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds a run of another config.
      FileNotFoundError, ValueError: missing or bad faces, more identities than the one-hot
        holds, a bad config.
    """
    gan_training.check_batch(config)
    faces = ciagan_sets.load_faces(config.data, 'train', config.model.resolution)
    if faces.num_classes > config.model.num_classes:
        raise ValueError(
            f"{config.data.train}: {faces.num_classes} identities, but the generator's "
            f'one-hot has config.model.num_classes={config.model.num_classes}'
        )
    t = config.train
    k = ciagan_step.sub_batches(t.identity_steps, t.critic_steps, t.generator_steps)

    def make_task(mesh) -> loop.Task:
        generator, discriminator, identity_net = build_models(config)
        step = ciagan_step.make_train_step(
            generator,
            discriminator,
            identity_net,
            mesh,
            n_identity=t.identity_steps,
            n_critic=t.critic_steps,
            n_generator=t.generator_steps,
            margin=config.loss.margin,
            identity_weight=config.loss.identity_weight,
        )

        def batches(position: int):
            return ciagan_pairs.pair_batches(
                faces,
                batch_size=config.data.batch_size,  # Global: each host takes its rows.
                sub_batches=k,
                resolution=config.model.resolution,
                seed=config.seed,
                start_position=position,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                train=True,
            )

        def export(state: state_lib.TrainState) -> str | None:
            out = os.path.join(workdir, EXPORT_DIR)
            # The whole variables: the spectral-norm vectors are part of the network.
            classes = {'num_classes': int(config.model.num_classes)}
            return gan_training.export_generator(
                config, state, out, 'ciagan', len(faces), with_state=True, info=classes
            )

        return loop.Task(
            specs=specs(config, generator, discriminator, identity_net),
            models={GENERATOR: generator, DISCRIMINATOR: discriminator, IDENTITY: identity_net},
            train_step=step,
            batches=batches,
            shard=lambda b: sharding.shard_batch(b, mesh, ciagan_step.BATCH_KEYS),
            finite_keys=('d_loss', 'g_loss', 'identity_loss'),
            batch_size=int(config.data.batch_size),
            hparams={'data.train_faces': len(faces), 'data.identities': faces.num_classes},
            results={'train_faces': len(faces), 'identities': faces.num_classes},
            names_key='position',
            export=export,
        )

    return loop.run(config, workdir, make_task, stop_after=stop_after)
