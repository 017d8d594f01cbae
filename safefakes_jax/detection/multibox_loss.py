"""SSD multibox loss with hard negative mining, following yxlijun/DSFD.pytorch
`layers/modules/multibox_loss.py` (`MultiBoxLoss.forward`, one shot; DSFD's PAL loss is the sum
of this over both shots with lambda = 1, see yx `train.py`).

yx, per shot:

* loc: smooth-L1 (beta 1), summed over positive anchors and coordinates.
* conf: per anchor l = logsumexp(logits) - logits[target]; positives are set to 0; each image
  ranks its anchors by l (descending) and takes the first num_neg = min(3 * num_pos_i, A - 1)
  as hard negatives (so an image with no positives adds none). Cross-entropy is summed over
  positives and hard negatives.
* Both sums are divided by N = total positives in the batch. yx uses N = batch size when the
  batch has no positives; then both sums are 0 (no positives, hence no negatives), so 0 / B and
  our 0 / max(N, 1) agree exactly.

Deviations: static shapes. The mining is a double argsort (rank of each anchor), not boolean
indexing. yx's `torch.sort` is not stable, so which of several anchors with *equal* loss at the
num_neg boundary is taken may differ; the loss value does not (equal losses). Positives that rank
inside num_neg are counted once (positives | negatives), as in yx's `(pos + neg).gt(0)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_POS_RATIO = 3


def smooth_l1(x: jnp.ndarray, beta: float = 1.0) -> jnp.ndarray:
    """Elementwise smooth-L1 (torch `smooth_l1_loss`, reduction none)."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def hard_negative_mask(
    conf_pred: jnp.ndarray, labels: jnp.ndarray, neg_pos_ratio: int = NEG_POS_RATIO
) -> jnp.ndarray:
    """Hard negatives per image, as yx ranks them.

    Args:
        conf_pred: [B, A, C] logits.
        labels: [B, A] int targets (0 = background).
        neg_pos_ratio: negatives per positive.

    Returns:
        [B, A] bool, True for the selected hard negatives (may include positives when
        num_neg exceeds the number of background anchors, as in yx).
    """
    conf_pred = jax.lax.stop_gradient(conf_pred)  # Ranks carry no gradient.
    pos = labels > 0
    ce = _cross_entropy(conf_pred, labels)
    ce = jnp.where(pos, 0.0, ce)
    order = jnp.argsort(-ce, axis=1, stable=True)
    rank = jnp.argsort(order, axis=1, stable=True)
    num_pos = jnp.sum(pos, axis=1, keepdims=True)
    num_neg = jnp.minimum(neg_pos_ratio * num_pos, labels.shape[1] - 1)
    return rank < num_neg


def _cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return logz - picked


def multibox_loss(
    loc_pred: jnp.ndarray,
    conf_pred: jnp.ndarray,
    loc_t: jnp.ndarray,
    labels: jnp.ndarray,
    neg_pos_ratio: int = NEG_POS_RATIO,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """yx `MultiBoxLoss` for one shot.

    Args:
        loc_pred: [B, A, 4] predicted offsets.
        conf_pred: [B, A, 2] logits (0 = background, 1 = face).
        loc_t: [B, A, 4] regression targets (read at positives only).
        labels: [B, A] int targets in {0, 1}.
        neg_pos_ratio: hard negatives per positive.

    Returns:
        (loc_loss, conf_loss): float32 scalars, each a sum divided by max(total positives, 1).
    """
    loc_pred = loc_pred.astype(jnp.float32)
    conf_pred = conf_pred.astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    pos = labels > 0
    # where (not multiply) so that non-finite targets at ignored anchors cannot leak NaN.
    loc_terms = jnp.where(pos[..., None], smooth_l1(loc_pred - loc_t), 0.0)
    loc_loss = jnp.sum(loc_terms)

    neg = hard_negative_mask(conf_pred, labels, neg_pos_ratio)
    ce = _cross_entropy(conf_pred, labels)
    conf_loss = jnp.sum(jnp.where(pos | neg, ce, 0.0))

    n = jnp.maximum(jnp.sum(pos), 1).astype(jnp.float32)
    return loc_loss / n, conf_loss / n
