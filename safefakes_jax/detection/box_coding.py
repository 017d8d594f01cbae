"""SSD box coding and IoU, following yxlijun/DSFD.pytorch `layers/bbox_utils.py`.

`encode` / `decode` are yx `encode` / `decode` with variances (0.1, 0.2); `iou` is yx `jaccard`
(continuous coordinates, no +1 on widths). All functions are jnp, shape-polymorphic over
leading batch dimensions where noted, and jit-able.

Deviations from yx: none in the arithmetic. `encode` of a degenerate GT (zero width or height)
gives -inf, as in yx; `matching.match` zeroes the targets of background anchors so that padded
GT rows never reach the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

VARIANCES = (0.1, 0.2)


def cxcywh_to_xyxy(boxes: jnp.ndarray) -> jnp.ndarray:
    """(cx, cy, w, h) -> (x1, y1, x2, y2) over the last axis (yx `point_form`)."""
    c, half = boxes[..., :2], boxes[..., 2:] / 2
    return jnp.concatenate([c - half, c + half], axis=-1)


def xyxy_to_cxcywh(boxes: jnp.ndarray) -> jnp.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h) over the last axis (yx `center_size`)."""
    lo, hi = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([(lo + hi) / 2, hi - lo], axis=-1)


def encode(
    gt_xyxy: jnp.ndarray,
    anchors_cxcywh: jnp.ndarray,
    variances: Sequence[float] = VARIANCES,
) -> jnp.ndarray:
    """Regression targets of matched GT boxes with respect to their anchors.

    Args:
        gt_xyxy: [..., 4] GT boxes (x1, y1, x2, y2), same units as the anchors (normalised).
        anchors_cxcywh: [..., 4] anchors (cx, cy, w, h), broadcastable against `gt_xyxy`.
        variances: (centre, size) variances.

    Returns:
        [..., 4] targets ((g_c - p_c) / (v0 p_wh), log(g_wh / p_wh) / v1).
    """
    g = xyxy_to_cxcywh(gt_xyxy)
    p_c, p_wh = anchors_cxcywh[..., :2], anchors_cxcywh[..., 2:]
    t_c = (g[..., :2] - p_c) / (variances[0] * p_wh)
    t_wh = jnp.log(g[..., 2:] / p_wh) / variances[1]
    return jnp.concatenate([t_c, t_wh], axis=-1)


def decode(
    loc: jnp.ndarray,
    anchors_cxcywh: jnp.ndarray,
    variances: Sequence[float] = VARIANCES,
) -> jnp.ndarray:
    """Inverse of `encode`: predicted offsets -> boxes (x1, y1, x2, y2).

    Args:
        loc: [..., 4] predicted offsets.
        anchors_cxcywh: [..., 4] anchors (cx, cy, w, h), broadcastable against `loc`.
        variances: (centre, size) variances.

    Returns:
        [..., 4] boxes (x1, y1, x2, y2) in the anchors' units.
    """
    p_c, p_wh = anchors_cxcywh[..., :2], anchors_cxcywh[..., 2:]
    c = p_c + loc[..., :2] * variances[0] * p_wh
    wh = p_wh * jnp.exp(loc[..., 2:] * variances[1])
    return jnp.concatenate([c - wh / 2, c + wh / 2], axis=-1)


def iou(a_xyxy: jnp.ndarray, b_xyxy: jnp.ndarray) -> jnp.ndarray:
    """Pairwise IoU, continuous coordinates (yx `jaccard`: no +1 on widths).

    Args:
        a_xyxy: [N, 4] boxes (x1, y1, x2, y2).
        b_xyxy: [M, 4] boxes (x1, y1, x2, y2).

    Returns:
        [N, M] IoU. Two empty boxes give 0/0 = NaN, as in yx; callers mask such rows.
    """
    lt = jnp.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = jnp.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a_xyxy[:, 2] - a_xyxy[:, 0]) * (a_xyxy[:, 3] - a_xyxy[:, 1])
    area_b = (b_xyxy[:, 2] - b_xyxy[:, 0]) * (b_xyxy[:, 3] - b_xyxy[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)
