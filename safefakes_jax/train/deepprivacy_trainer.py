"""DeepPrivacy training on the shared loop (`loop.py`): its networks, step, input and evaluators.

`train_and_evaluate(config, workdir)` trains `models.deepprivacy.Generator` (with an EMA copy)
against its conditional `Discriminator` (`config.model.discriminator`: 'v2' or 'v1') on face
crops (`config.data`: an FDF-layout folder or a synthetic `FaceCrops` file) with the step of
`deepprivacy_step.py`, one discriminator and one generator update per batch. Checkpoints,
resume, logging, the NaN check and the evaluators (`config.evals`, e.g. `inpainting`) come
from the loop. The EMA generator is what evaluation and the `deepprivacy` anonymizer use.

  python launch/train.py --config=configs/deepprivacy_fdf.py:smoke --workdir=/tmp/dp_smoke
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from safefakes_jax.models import deepprivacy
from safefakes_jax.train import deepprivacy_step, gan_training, optim
from safefakes_jax.train import state as state_lib

GENERATOR = deepprivacy_step.GENERATOR
DISCRIMINATOR = deepprivacy_step.DISCRIMINATOR
BATCH_KEYS = ('image', 'box', 'keypoints')
EXPORT_DIR = gan_training.EXPORT_DIR


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else jnp.float32


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[deepprivacy.Generator, deepprivacy.Discriminator]:
    """The generator and discriminator of `config.model`."""
    m = config.model
    kw = dict(width=m.width, resolution=m.resolution, dtype=_dtype(config))
    return deepprivacy.Generator(**kw), deepprivacy.Discriminator(variant=m.discriminator, **kw)


def ema_decay(config: ml_collections.ConfigDict) -> float:
    """`config.model.ema_decay`, or DeepPrivacy's 0.5^(batch / 10,000) when it is 0."""
    return float(config.model.ema_decay or 0.5 ** (config.data.batch_size / 10_000))


def example_inputs(resolution: int, n: int = 1) -> dict[str, jnp.ndarray]:
    """Zero inputs of the networks' shapes (for init and shape checks)."""
    return {
        'image': jnp.zeros((n, resolution, resolution, 3), jnp.float32),
        'keypoints': jnp.full((n, 7, 2), jnp.nan, jnp.float32),
        'z': jnp.zeros((n, *deepprivacy_step.Z_SHAPE), jnp.float32),
        'mask': jnp.zeros((n, resolution, resolution, 1), jnp.float32),
    }


def specs(
    config: ml_collections.ConfigDict,
    generator: deepprivacy.Generator,
    discriminator: deepprivacy.Discriminator,
) -> dict[str, state_lib.Spec]:
    """The two networks of the train state, their optimisers and the generator's EMA."""
    x = example_inputs(config.model.resolution)
    steps = int(config.train.steps)
    _, g_tx = optim.build(config.optim.generator, steps)
    _, d_tx = optim.build(config.optim.discriminator, steps)
    d_args = (x['image'], x['image'], x['keypoints'])
    if config.model.discriminator == 'v2':
        d_args += (x['mask'],)
    return {
        GENERATOR: state_lib.Spec(
            lambda k: generator.init(k, x['image'], x['keypoints'], x['z']), g_tx, ema_decay(config)
        ),
        DISCRIMINATOR: state_lib.Spec(lambda k: discriminator.init(k, *d_args), d_tx),
    }


def summary_networks(config: ml_collections.ConfigDict) -> dict[str, tuple[str, Any, Any]]:
    """`tools/model_summary.py`'s networks: name -> (description, module, abstract init args)."""
    g, d = build_models(config)
    r = g.resolution
    x = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_inputs(r).items()}
    d_args = (x['image'], x['image'], x['keypoints'])
    d_args += (x['mask'],) if d.variant == 'v2' else ()
    return {
        GENERATOR: (
            f'DeepPrivacy Generator(width={g.width}) at {r}x{r}',
            g,
            lambda: (jax.random.key(0), x['image'], x['keypoints'], x['z']),
        ),
        DISCRIMINATOR: (
            f'DeepPrivacy Discriminator({d.variant!r}, width={d.width}) at {r}x{r}',
            d,
            lambda: (jax.random.key(0), *d_args),
        ),
    }


def make_step(config: ml_collections.ConfigDict, generator, discriminator, mesh):
    """The jitted DeepPrivacy train step with the settings of `config.loss`."""
    loss = config.loss
    return deepprivacy_step.make_train_step(
        generator,
        discriminator,
        mesh,
        gp=loss.gp,
        gp_weight=loss.gp_weight,
        eps_weight=loss.eps_weight,
        lazy_every=loss.lazy_every,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains DeepPrivacy as `config` says and evaluates it (module docstring).

    Returns:
      What `loop.run` returns (`steps`, `history`, the evaluators' results).

    Raises:
      checkpoints.WorkdirConfigError: `workdir` holds a run of another config.
      FileNotFoundError, ValueError: missing or bad face crops, a bad config.
    """
    return gan_training.train_on_face_crops(
        config,
        workdir,
        build_models=build_models,
        specs=specs,
        make_step=make_step,
        batch_keys=BATCH_KEYS,
        export_format='deepprivacy',
        stop_after=stop_after,
    )
