"""Host-side (numpy) DSFD test-time post-processing, following yxlijun/DSFD.pytorch
`layers/functions/detection.py` (`Detect`), `layers/bbox_utils.py` (`nms`) and
`tools/wider_test.py` (`bbox_vote`, the WIDER output rows).

* `detections_from_outputs`: softmax, decode, face score > conf_thresh, NMS (IoU 0.3,
  continuous coordinates) over the top 5000 candidates, at most 750 kept (yx `Detect`).
* `nms`: greedy, highest score first, suppresses boxes with IoU > thresh (yx keeps IoU <= thresh).
* `box_voting`: yx `bbox_vote` (IoU with +1-pixel widths, clusters at IoU >= 0.3, singletons
  dropped, score-weighted mean box with the cluster's maximum score, first 750 kept).
* `to_wider_rows`: `x1 y1 x2-x1+1 y2-y1+1 score`, as yx writes its WIDER result files.

Deviations from yx:
* `box_voting` returns an empty [0, 5] array when no cluster has two or more members (yx raises
  NameError because `dets` is never bound). It always removes the top box from the pool, so a
  degenerate top box cannot loop forever (yx would).
* Sorting is stable (ties keep input order); yx's `argsort()[::-1]` / `torch.sort` order ties
  arbitrarily.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NMS_THRESH = 0.3
TOP_K = 5000
KEEP_TOP_K = 750
CONF_THRESH = 0.05
VOTE_THRESH = 0.3


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU of one box with many; `plus_one` counts pixel widths as x2 - x1 + 1."""
    e = 1.0 if plus_one else 0.0
    w = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + e)
    h = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + e)
    inter = w * h
    area = (box[2] - box[0] + e) * (box[3] - box[1] + e)
    areas = (boxes[:, 2] - boxes[:, 0] + e) * (boxes[:, 3] - boxes[:, 1] + e)
    with np.errstate(divide='ignore', invalid='ignore'):
        return inter / (area + areas - inter)


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    iou_thresh: float = NMS_THRESH,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
) -> np.ndarray:
    """Greedy NMS with continuous IoU (yx `nms` + `Detect`'s keep limit).

    Args:
        boxes_xyxy: [N, 4] boxes (x1, y1, x2, y2).
        scores: [N] scores.
        iou_thresh: a box is suppressed when its IoU with a kept box is > this.
        top_k: only the top_k highest scores enter NMS.
        keep_top_k: at most this many indices are returned.

    Returns:
        int64 indices into `boxes_xyxy`, in descending score order.
    """
    boxes_xyxy = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind='stable')[:top_k]
    keep: list[int] = []
    while order.size > 0 and len(keep) < keep_top_k:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        ious = _iou_one_to_many(boxes_xyxy[i], boxes_xyxy[rest], plus_one=False)
        order = rest[ious <= iou_thresh]  # yx `IoU.le(overlap)`: a NaN IoU suppresses too.
    return np.asarray(keep, np.int64)


def box_voting(
    dets: np.ndarray, iou_thresh: float = VOTE_THRESH, keep: int = KEEP_TOP_K
) -> np.ndarray:
    """yx `bbox_vote` over stacked multi-scale detections.

    Args:
        dets: [N, 5] rows (x1, y1, x2, y2, score) in pixels.
        iou_thresh: boxes with +1-pixel IoU >= this with the cluster's top box join it.
        keep: at most this many voted boxes are returned.

    Returns:
        [M, 5] float64 voted boxes in cluster order (descending top score); [0, 5] if none.
    """
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    dets = dets[np.argsort(-dets[:, 4], kind='stable')]
    out = []
    while dets.shape[0] > 0 and len(out) < keep:
        in_cluster = _iou_one_to_many(dets[0], dets, plus_one=True) >= iou_thresh
        in_cluster[0] = True
        cluster, dets = dets[in_cluster], dets[~in_cluster]
        if cluster.shape[0] <= 1:
            continue
        w = cluster[:, 4:5]
        box = np.sum(cluster[:, :4] * w, axis=0) / np.sum(w)
        out.append(np.concatenate([box, [cluster[:, 4].max()]]))
    return np.stack(out) if out else np.zeros((0, 5), np.float64)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decode_np(
    loc: np.ndarray, anchors_cxcywh: np.ndarray, variances: Sequence[float] = (0.1, 0.2)
) -> np.ndarray:
    """numpy twin of `box_coding.decode`: offsets -> (x1, y1, x2, y2)."""
    loc = np.asarray(loc, np.float64)
    a = np.asarray(anchors_cxcywh, np.float64)
    c = a[..., :2] + loc[..., :2] * variances[0] * a[..., 2:]
    wh = a[..., 2:] * np.exp(loc[..., 2:] * variances[1])
    return np.concatenate([c - wh / 2, c + wh / 2], axis=-1)


def detections_from_outputs(
    loc: np.ndarray,
    conf: np.ndarray,
    anchors: np.ndarray,
    image_wh: tuple[float, float],
    conf_thresh: float = CONF_THRESH,
    nms_thresh: float = NMS_THRESH,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
    variances: Sequence[float] = (0.1, 0.2),
) -> np.ndarray:
    """One image's shot-2 outputs -> detections (yx `Detect` + the scaling in `wider_test`).

    Args:
        loc: [A, 4] predicted offsets.
        conf: [A, 2] logits (softmax is applied here).
        anchors: [A, 4] normalised (cx, cy, w, h).
        image_wh: (width, height) to scale the normalised boxes by. Pass the *original* image
            size to undo a test-time resize (yx multiplies by the resized size, then / shrink).
        conf_thresh: keep anchors whose face probability is > this.
        nms_thresh, top_k, keep_top_k: see `nms`.
        variances: box-coding variances.

    Returns:
        [N, 5] float64 rows (x1, y1, x2, y2, score) in pixels, descending score.
    """
    scores = _softmax(np.asarray(conf, np.float64))[:, 1]
    sel = np.flatnonzero(scores > conf_thresh)
    if sel.size == 0:
        return np.zeros((0, 5), np.float64)
    w, h = image_wh
    boxes = decode_np(np.asarray(loc)[sel], np.asarray(anchors)[sel], variances)
    boxes = boxes * np.array([w, h, w, h], np.float64)
    kept = nms(boxes, scores[sel], nms_thresh, top_k, keep_top_k)
    return np.concatenate([boxes[kept], scores[sel][kept, None]], axis=1)


def to_wider_rows(dets_xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2, score) -> WIDER result rows (x, y, w, h, score), w = x2 - x1 + 1."""
    d = np.asarray(dets_xyxy, np.float64).reshape(-1, 5)
    return np.stack(
        [d[:, 0], d[:, 1], d[:, 2] - d[:, 0] + 1, d[:, 3] - d[:, 1] + 1, d[:, 4]], axis=1
    )
