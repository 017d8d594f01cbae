"""The DSFD train and predict steps: pure functions, jit-compiled on a `data` mesh.

`make_train_step` returns `train_step(state, batch, rng) -> (state, metrics)`:

* preprocessing inside the step (`dsfd.preprocess`): uint8 RGB -> float32 minus the RGB mean;
* matching (threshold 0.35 in yx, 0.4 in the paper) of the batch's boxes to the anchors of both
  shots (PAL: the first shot uses anchors half the size, `anchors.first_shot_sizes`);
* loss = pal_weight * (loc1 + conf1) + loc2 + conf2 (yx: pal_weight 1), each the multibox
  loss with 3:1 hard negatives, normalised by the positives of the whole (global) batch;
* `rng = fold_in(rng, state.step)` (the model has no dropout today; the key is passed on as the
  `dropout` stream so a model with randomness gets a fresh key every step);
* metrics: `loc1 conf1 loc2 conf2 loss lr grad_norm`.

Sharding: params and optimiser state replicated (`P()`), batch arrays sharded on their leading
axis (`P('data')`), built from each host's part with `jax.make_array_from_process_local_data`
(`shard_batch`). Under jit the sharded step computes the same values as the single-device one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from safefakes_jax import sharding
from safefakes_jax.detection import anchors as anchors_lib
from safefakes_jax.detection import matching, multibox_loss
from safefakes_jax.models import dsfd
from safefakes_jax.sharding import batch_sharding, replicated
from safefakes_jax.train.state import TrainState

NETWORK = 'detector'  # The train state's one network.
# The batch fields that go to the device (strings and positions stay on the host).
TRAIN_KEYS = ('image', 'boxes', 'box_mask')

Metrics = dict[str, jax.Array]


def shard_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, keys: tuple[str, ...] = TRAIN_KEYS
) -> dict[str, jax.Array]:
    """This host's batch -> global arrays sharded over `data` (only `keys` are kept)."""
    return sharding.shard_batch(batch, mesh, keys)


def make_train_step(
    model: nn.Module,
    schedule: optax.Schedule,
    mesh: Mesh,
    *,
    image_size: int,
    aspect_ratio: float = 1.0,
    match_threshold: float = 0.35,
    pal_weight: float = 1.0,
    neg_pos_ratio: int = 3,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, Metrics]]:
    """Builds the jit-compiled DSFD train step (module docstring).

    Args:
      model: the detector; `model.apply({'params': p}, images)` returns loc1/conf1/loc2/conf2;
        its params are `state.nets['detector']`.
      schedule: the learning-rate schedule (reported in the metrics).
      mesh: the device mesh (axis `data`).
      image_size: side S of the square training images.
      aspect_ratio: anchor height / width (1.0 yx, 1.5 paper).
      match_threshold: IoU under which an anchor is background.
      pal_weight: weight of the first shot's loss.
      neg_pos_ratio: hard negatives per positive.

    Returns:
      `train_step(state, batch, rng) -> (state, metrics)`; `batch` holds `TRAIN_KEYS` (from
      `shard_batch`), `rng` is a replicated key; the state argument is donated.
    """
    first, second = anchors_lib.shot_anchors(image_size, aspect_ratio)
    compute_dtype = getattr(model, 'dtype', jnp.float32)

    def loss_fn(params, images, boxes, box_mask, rng):
        out = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
        terms = {}
        for shot, anchors in (('1', first), ('2', second)):
            loc_t, labels = matching.match_batch(
                boxes, box_mask, jnp.asarray(anchors), threshold=match_threshold
            )
            loc, conf = multibox_loss.multibox_loss(
                out['loc' + shot], out['conf' + shot], loc_t, labels, neg_pos_ratio
            )
            terms['loc' + shot], terms['conf' + shot] = loc, conf
        loss = pal_weight * (terms['loc1'] + terms['conf1']) + terms['loc2'] + terms['conf2']
        return loss, terms

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        images = dsfd.preprocess(batch['image'], compute_dtype)
        boxes = batch['boxes'].astype(jnp.float32) / float(image_size)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        net = state.nets[NETWORK]
        (loss, terms), grads = grad_fn(net.params, images, boxes, batch['box_mask'], rng)
        metrics = dict(
            terms,
            loss=loss,
            lr=jnp.asarray(schedule(state.step), jnp.float32),
            grad_norm=optax.tree.norm(grads),
        )
        return state.update(**{NETWORK: net.apply_gradients(grads)}).next_step(), metrics

    repl, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(
        train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=0
    )
