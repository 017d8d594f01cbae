r"""Sun2018 training on the shared loop (`loop.py`): its networks, step, input and evaluators.

`train_and_evaluate(config, workdir)` trains `models.sun2018.Generator` (pix2pix U-Net) against
its conditional PatchGAN `Discriminator` on face crops with their 68 landmarks (`config.data`:
an FDF-layout folder or a synthetic `FaceCrops` file; `face_crop_pipeline` with
`landmarks68=True`) with the step of `sun2018_step.py`, one discriminator and one generator
update per batch. Checkpoints, resume, logging, the NaN check and the evaluators
(`config.evals`, e.g. `inpainting`: the generator's `inpaint` method) come from the loop, as for
DeepPrivacy. At the end the generator (its EMA when `config.model.ema_decay` > 0; none by
default) is exported to `<workdir>/generator` for the `sun2018` anonymizer.

  python launch/train.py --config=configs/sun2018_pipa.py:smoke \
      --workdir=workdirs/sun2018_pipa_smoke
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from safefakes_jax.models import sun2018
from safefakes_jax.train import gan_training, optim, sun2018_step
from safefakes_jax.train import state as state_lib

GENERATOR = sun2018_step.GENERATOR
DISCRIMINATOR = sun2018_step.DISCRIMINATOR
BATCH_KEYS = ('image', 'box', 'landmarks68')
EXPORT_DIR = gan_training.EXPORT_DIR
FORMAT = 'sun2018'  # conversion.json `format` of an export.


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return jnp.bfloat16 if config.model.compute_dtype == 'bfloat16' else jnp.float32


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[sun2018.Generator, sun2018.Discriminator]:
    """The generator and discriminator of `config.model`."""
    m = config.model
    kw = dict(width=m.width, resolution=m.resolution, dtype=_dtype(config))
    return (
        sun2018.Generator(dropout=m.dropout, **kw),
        sun2018.Discriminator(use_landmarks=m.d_landmarks, **kw),
    )


def example_inputs(resolution: int, n: int = 1) -> dict[str, jnp.ndarray]:
    """Zero inputs of the networks' shapes (for init and shape checks); no landmarks."""
    return {
        'image': jnp.zeros((n, resolution, resolution, 3), jnp.float32),
        'landmarks68': jnp.full((n, sun2018.NUM_LANDMARKS, 2), jnp.nan, jnp.float32),
    }


def specs(
    config: ml_collections.ConfigDict,
    generator: sun2018.Generator,
    discriminator: sun2018.Discriminator,
) -> dict[str, state_lib.Spec]:
    """The two networks of the train state and their optimisers (EMA: `model.ema_decay`)."""
    x = example_inputs(config.model.resolution)
    steps = int(config.train.steps)
    _, g_tx = optim.build(config.optim.generator, steps)
    _, d_tx = optim.build(config.optim.discriminator, steps)
    return {
        GENERATOR: state_lib.Spec(
            lambda k: generator.init(k, x['image'], x['landmarks68']),
            g_tx,
            float(config.model.ema_decay),
        ),
        DISCRIMINATOR: state_lib.Spec(
            lambda k: discriminator.init(k, x['image'], x['image'], x['landmarks68']), d_tx
        ),
    }


def summary_networks(
    config: ml_collections.ConfigDict,
) -> dict[str, tuple[str, Any, Callable[[], tuple]]]:
    """`tools/model_summary.py`'s networks: name -> (description, module, abstract init args)."""
    g, d = build_models(config)
    r = g.resolution
    x = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example_inputs(r).items()}
    return {
        GENERATOR: (
            f'Sun2018 U-Net Generator(width={g.width}) at {r}x{r}',
            g,
            lambda: (jax.random.key(0), x['image'], x['landmarks68']),
        ),
        DISCRIMINATOR: (
            f'Sun2018 PatchGAN Discriminator(width={d.width}, '
            f'use_landmarks={d.use_landmarks}) at {r}x{r}',
            d,
            lambda: (jax.random.key(0), x['image'], x['image'], x['landmarks68']),
        ),
    }


def make_step(config: ml_collections.ConfigDict, generator, discriminator, mesh):
    """The jitted Sun2018 train step with the settings of `config.loss`."""
    loss = config.loss
    return sun2018_step.make_train_step(
        generator,
        discriminator,
        mesh,
        l1_weight=loss.l1_weight,
        gan_loss=loss.gan_loss,
        l1_region=loss.l1_region,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains Sun2018 as `config` says and evaluates it (module docstring).

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
        export_format=FORMAT,
        landmarks68=True,
        stop_after=stop_after,
    )
