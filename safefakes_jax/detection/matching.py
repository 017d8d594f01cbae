"""Anchor-to-GT matching, following yxlijun/DSFD.pytorch `layers/bbox_utils.py` `match_ssd`.

yx algorithm (threshold 0.35, continuous IoU):

1. IoU of every GT with every anchor (anchors in point form).
2. Each anchor takes its best GT (`best_truth_idx`, `best_truth_overlap`).
3. Each GT's best anchor (`best_prior_idx`) is forced to that GT with overlap 2, so every GT
   gets at least one positive anchor even when its best IoU is below the threshold. yx runs a
   Python loop `for j: best_truth_idx[best_prior_idx[j]] = j`, so when two GTs share the same
   best anchor the *later* GT (larger j) wins; we reproduce that with a scatter-max over j.
4. Anchors whose overlap is below the threshold are background (label 0), the rest are faces
   (label 1). There is no ignore band.

Ties inside an argmax take the first index, as `torch.max` does on CPU/GPU in practice.

Deviations from yx (all needed for static shapes, none changes the result on valid input):
* GTs come padded to a fixed M with a boolean mask; masked rows get IoU -1 so that no anchor
  picks them and they force no anchor. With no valid GT every anchor is background.
* Loc targets of background anchors are set to 0 (yx encodes their best GT anyway; the loss
  never reads them, and zeros keep -inf from padded boxes out of the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from safefakes_jax.detection import box_coding

MATCH_THRESHOLD = 0.35


def match(
    gt_boxes: jnp.ndarray,
    gt_mask: jnp.ndarray,
    anchors: jnp.ndarray,
    threshold: float = MATCH_THRESHOLD,
    variances: Sequence[float] = box_coding.VARIANCES,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Match one image's GT boxes to the anchors (yx `match_ssd`).

    jit-able (static shapes); `jax.vmap(match, in_axes=(0, 0, None))` batches it.

    Args:
        gt_boxes: [M, 4] normalised (x1, y1, x2, y2), padded rows arbitrary.
        gt_mask: [M] bool, True for real GT rows.
        anchors: [A, 4] normalised (cx, cy, w, h).
        threshold: IoU below which a (non-forced) anchor is background.
        variances: box-coding variances.

    Returns:
        loc_targets [A, 4] float32 (0 for background anchors) and labels [A] int32 in {0, 1}.
    """
    gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
    gt_mask = jnp.asarray(gt_mask, bool)
    anchors = jnp.asarray(anchors, jnp.float32)
    num_gt = gt_boxes.shape[0]
    overlaps = box_coding.iou(gt_boxes, box_coding.cxcywh_to_xyxy(anchors))  # [M, A]
    overlaps = jnp.where(gt_mask[:, None], jnp.nan_to_num(overlaps, nan=0.0), -1.0)

    best_prior_idx = jnp.argmax(overlaps, axis=1)  # [M]
    best_truth_idx = jnp.argmax(overlaps, axis=0)  # [A]
    best_truth_overlap = jnp.max(overlaps, axis=0)  # [A]

    # Forced matches: the largest valid j per anchor wins, as in yx's sequential loop.
    gt_ids = jnp.where(gt_mask, jnp.arange(num_gt), -1)
    forced = jnp.full(anchors.shape[0], -1, jnp.int32).at[best_prior_idx].max(gt_ids)
    is_forced = forced >= 0
    best_truth_idx = jnp.where(is_forced, forced, best_truth_idx)
    best_truth_overlap = jnp.where(is_forced, 2.0, best_truth_overlap)

    labels = (best_truth_overlap >= threshold).astype(jnp.int32)
    loc = box_coding.encode(gt_boxes[best_truth_idx], anchors, variances)
    loc_targets = jnp.where(labels[:, None] > 0, loc, 0.0)
    return loc_targets, labels


def match_batch(
    gt_boxes: jnp.ndarray,
    gt_mask: jnp.ndarray,
    anchors: jnp.ndarray,
    threshold: float = MATCH_THRESHOLD,
    variances: Sequence[float] = box_coding.VARIANCES,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """`match` over a batch: gt_boxes [B, M, 4], gt_mask [B, M] -> ([B, A, 4], [B, A])."""
    return jax.vmap(lambda b, m: match(b, m, anchors, threshold, variances))(gt_boxes, gt_mask)
