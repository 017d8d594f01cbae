"""WIDER FACE easy / medium / hard AP: the official MATLAB protocol, vectorised.

Follows `eval_tools` of WIDER FACE (`wider_eval.m`, `read_pred.m`, `norm_score.m`,
`evaluation.m`, `boxoverlap.m`, `VOCap.m`) step by step, as written down in
`../shared/reference/wider_eval.md` §5, and not the public Python port's defects (§6):

1. Predictions are read for every (event, image) of the ground truth; a missing file means no
   detections (its faces still count). Rows are sorted by score, descending, stably.
2. Scores are normalised with one global min and max (initialised, like MATLAB, to
   realmax / realmin of single precision).
3. Per image and setting, each detection in score order takes the ground-truth box of maximum
   IoU (all boxes, kept or not; the first on ties; IoU pixel-inclusive, `+1`). At IoU >= 0.5:
   an ignored box removes the detection from the proposals (neither TP nor FP); a kept box not
   yet recalled makes it a TP; a kept box already recalled leaves it an FP.
4. 1000 thresholds `1 - t/1000`; precision = TP / proposals and recall = TP / kept faces over
   the whole set; AP is the VOC AP with the precision envelope (`fmax`, since MATLAB's `max`
   ignores the NaN of thresholds without proposals).

Why it is fast: a detection's matched box does not depend on the order (it is the arg-max IoU
over all boxes), so the sequential MATLAB loop reduces to "the first detection, in score
order, matched to a kept box is its TP". Everything then runs on flat arrays of all
(detection, box) pairs, and the per-threshold counts of step 4 are two `searchsorted`s over
the sorted scores, because the detections above a threshold are a prefix of each sorted image.

Documented deviations (no effect on any MATLAB-defined result):
* All scores equal (max = min): every normalised score is 1 (MATLAB divides 0 by 0, giving
  NaN scores that no threshold selects, i.e. AP 0).
* A setting without a single kept face gets AP NaN with a warning (MATLAB divides by 0).

Prediction-file errors: a malformed row or a NaN / infinite value is a `wider.FormatError`
naming the file and line; a count line that disagrees with the rows is a warning, and the rows
win. Predictions for an (event, image) not in the ground truth are ignored with one warning
giving their count.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Mapping

import numpy as np

from safefakes_jax.data import wider

SETTINGS = wider.SETTINGS
_REALMIN_SINGLE = float(np.finfo(np.float32).tiny)
_REALMAX_SINGLE = float(np.finfo(np.float32).max)
# Pairs (detection x ground-truth box) processed per chunk: bounds the memory on huge sets.
_PAIR_CHUNK = 4_000_000

Predictions = Mapping[tuple[str, str], np.ndarray]


@dataclasses.dataclass
class PRCurve:
    """Dataset precision-recall of one setting, one entry per threshold (0.999 down to 0).

    Attributes:
      thresholds: normalised-score thresholds `1 - t/1000`.
      precision: TP / proposals (NaN where no detection passes the threshold).
      recall: TP / kept faces.
      ap: VOC AP of the curve.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap: float


class APResult(dict):
    """`{'easy': ap, 'medium': ap, 'hard': ap}` with the PR curves in `.curves`."""

    def __init__(self, curves: dict[str, PRCurve]):
        super().__init__({s: c.ap for s, c in curves.items()})
        self.curves = curves


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC AP with the precision envelope (`VOCap.m`); NaN precisions are ignored as MATLAB."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]  # Backward running max, NaN-ignoring.
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def read_prediction_file(path: str) -> np.ndarray:
    """`wider.read_prediction_file`, with numpy's C parser on the well-formed common case."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    parts = text.split('\n', 2)
    try:
        count = int(parts[1])
        body = parts[2] if len(parts) > 2 else ''
        if body.strip():
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                dets = np.loadtxt(io.StringIO(body), dtype=np.float64, comments=None, ndmin=2)
        else:
            dets = np.zeros((0, 5))
        if dets.shape[1] != 5 or not np.isfinite(dets).all() or count != len(dets):
            raise ValueError
    except (ValueError, IndexError, UserWarning):
        # Anything unusual: the line-by-line reader gives the error with its line (or warns).
        return wider.read_prediction_file(path)
    return dets


def _gather_predictions(predictions: str | os.PathLike | Predictions,
                        gt: wider.GroundTruth) -> list[np.ndarray]:
    """One float64 [N, 5] array per ground-truth image, in ground-truth order."""
    keys = [(im.event, im.stem) for im in gt.images]
    if isinstance(predictions, (str, os.PathLike)):
        pred_dir = os.fspath(predictions)
        if not os.path.isdir(pred_dir):
            raise FileNotFoundError(f'{pred_dir}: prediction folder not found')
        out = []
        for event, stem in keys:
            path = os.path.join(pred_dir, event, stem + '.txt')
            out.append(read_prediction_file(path) if os.path.isfile(path) else np.zeros((0, 5)))
        known = {f'{e}/{s}.txt' for e, s in keys}
        extra = sum(1 for event in os.listdir(pred_dir)
                    if os.path.isdir(os.path.join(pred_dir, event))
                    for f in os.listdir(os.path.join(pred_dir, event))
                    if f.endswith('.txt') and f'{event}/{f}' not in known)
    else:
        out = []
        for key in keys:
            dets = np.asarray(predictions.get(key, np.zeros((0, 5))), np.float64)
            if dets.size and (dets.ndim != 2 or dets.shape[1] != 5):
                raise ValueError(f'predictions[{key}]: expected shape [N, 5], got {dets.shape}')
            dets = dets.reshape(-1, 5)
            if not np.isfinite(dets).all():
                raise ValueError(f'predictions[{key}]: NaN or infinite value')
            out.append(dets)
        extra = len(set(predictions) - set(keys))
    if extra:
        warnings.warn(f'{extra} prediction images are not in the ground truth; ignored',
                      stacklevel=3)
    return out


def _match(det_img, det_boxes, gt_start, gt_count, gt_boxes, iou_thresh):
    """Global index of each detection's max-IoU box (-1: none >= iou_thresh or no boxes).

    Only overlapping pairs can reach `iou_thresh > 0`, and the arg-max matters only when the
    maximum reaches it, so pairs are filtered cheaply (intersection width, then height) before
    the division; of the survivors at or above the threshold, each detection takes the largest
    IoU, the first box on ties (MATLAB's `max`; NaN never reaches the threshold, as `max`
    skips it).
    """
    matched = np.full(len(det_img), -1, np.int64)
    k_per_det = gt_count[det_img]
    has_gt = np.flatnonzero(k_per_det > 0)
    gx1, gy1, gx2, gy2 = (np.ascontiguousarray(gt_boxes[:, c]) for c in range(4))
    pairs_before = np.cumsum(k_per_det[has_gt])
    start = 0
    while start < len(has_gt):  # Chunks of consecutive detections bound the pair arrays.
        base = pairs_before[start - 1] if start else 0
        stop = max(int(np.searchsorted(pairs_before, base + _PAIR_CHUNK, side='right')),
                   start + 1)
        dets = has_gt[start:stop]
        start = stop
        k = k_per_det[dets]
        pair_det = np.repeat(np.arange(len(dets)), k)
        # Boxes of an image are consecutive: pair p of a detection is box gt_start + p.
        pair_gt = np.repeat(gt_start[det_img[dets]] - (np.cumsum(k) - k), k) + np.arange(k.sum())
        b = det_boxes[dets]
        # boxoverlap.m: pixel-inclusive widths; non-overlapping pairs have IoU 0.
        w = (np.minimum(gx2[pair_gt], b[pair_det, 2])
             - np.maximum(gx1[pair_gt], b[pair_det, 0]) + 1)
        keep = w > 0
        pair_det, pair_gt, w = pair_det[keep], pair_gt[keep], w[keep]
        h = (np.minimum(gy2[pair_gt], b[pair_det, 3])
             - np.maximum(gy1[pair_gt], b[pair_det, 1]) + 1)
        keep = h > 0
        pair_det, pair_gt, w, h = pair_det[keep], pair_gt[keep], w[keep], h[keep]
        inter = w * h
        area_a = (gx2[pair_gt] - gx1[pair_gt] + 1) * (gy2[pair_gt] - gy1[pair_gt] + 1)
        area_b = ((b[pair_det, 2] - b[pair_det, 0] + 1) * (b[pair_det, 3] - b[pair_det, 1] + 1))
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = inter / (area_a + area_b - inter)
        keep = iou >= iou_thresh
        pair_det, pair_gt, iou = pair_det[keep], pair_gt[keep], iou[keep]
        # Stable sort by (detection, -IoU): the first row of each detection is its match.
        order = np.lexsort((-iou, pair_det))
        first = np.unique(pair_det[order], return_index=True)[1]
        matched[dets[pair_det[order][first]]] = pair_gt[order][first]
    return matched


def evaluate(predictions: str | os.PathLike | Predictions,
             gt_dir: str | os.PathLike | wider.GroundTruth, iou_thresh: float = 0.5,
             num_thresholds: int = 1000) -> APResult:
    """WIDER FACE AP of the easy, medium and hard settings (official protocol).

    Args:
      predictions: a prediction folder (`<event>/<image>.txt`: name, count, `x y w h score`
        rows) or an in-memory `{(event, image): array [N, 5] x y w h score}`.
      gt_dir: `eval_tools/ground_truth` (the four .mat files), or its `wider.GroundTruth`.
      iou_thresh: matching threshold (official: 0.5).
      num_thresholds: score thresholds of the PR curve (official: 1000).

    Returns:
      `{'easy': ap, 'medium': ap, 'hard': ap}`, with the PR curves in `.curves`.
    """
    if not 0 < iou_thresh <= 1:
        raise ValueError(f'iou_thresh must be in (0, 1], got {iou_thresh}')
    gt = gt_dir if isinstance(gt_dir, wider.GroundTruth) else wider.read_ground_truth(gt_dir)
    per_image = _gather_predictions(predictions, gt)

    # Flat ground truth: [x1 y1 x2 y2] with x2 = x + w, as evaluation.m.
    gt_count = np.array([len(im.boxes) for im in gt.images], np.int64)
    gt_start = np.cumsum(gt_count) - gt_count
    gt_boxes = np.concatenate([im.boxes for im in gt.images] + [np.zeros((0, 4))]).astype(
        np.float64)
    gt_boxes[:, 2:] += gt_boxes[:, :2]

    # Flat detections, sorted by image then score (descending, stable: file order on ties).
    n_det = np.array([len(d) for d in per_image], np.int64)
    dets = np.concatenate(per_image + [np.zeros((0, 5))])
    det_img = np.repeat(np.arange(len(per_image)), n_det)
    order = np.lexsort((-dets[:, 4], det_img))
    dets, det_img = dets[order], det_img[order]
    det_boxes = dets[:, :4].copy()
    det_boxes[:, 2:] += det_boxes[:, :2]

    scores = dets[:, 4]
    if len(scores):  # norm_score.m, with MATLAB's single-precision initial values.
        hi = max(_REALMIN_SINGLE, float(scores.max()))
        lo = min(_REALMAX_SINGLE, float(scores.min()))
        scores = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)

    matched = _match(det_img, det_boxes, gt_start, gt_count, gt_boxes, iou_thresh)
    counted = gt_count[det_img] > 0  # evaluation.m skips images without ground truth.
    thresholds = 1.0 - np.arange(1, num_thresholds + 1) / num_thresholds

    def count_at_or_above(values: np.ndarray) -> np.ndarray:
        values = np.sort(values)
        return len(values) - np.searchsorted(values, thresholds, side='left')

    curves = {}
    for setting in SETTINGS:
        kept = np.zeros(len(gt_boxes), bool)
        n_faces = 0
        for k, im in enumerate(gt.images):
            keep = im.keep.get(setting, np.zeros(0, np.int64))
            kept[gt_start[k] + keep] = True
            n_faces += len(keep)
        hit = matched >= 0
        ignored = hit & ~kept[np.maximum(matched, 0)]
        candidates = np.flatnonzero(hit & ~ignored)
        # The first detection (in score order) on each kept box is its TP; later ones are FPs.
        _, first = np.unique(matched[candidates], return_index=True)
        tp = np.zeros(len(matched), bool)
        tp[candidates[first]] = True
        n_tp = count_at_or_above(scores[tp])
        n_prop = count_at_or_above(scores[counted & ~ignored])
        with np.errstate(divide='ignore', invalid='ignore'):
            precision = n_tp / n_prop
            recall = n_tp / n_faces if n_faces else np.full(num_thresholds, np.nan)
        if n_faces:
            ap = voc_ap(recall, precision)
        else:
            warnings.warn(f'WIDER setting {setting!r} has no kept faces; its AP is NaN',
                          stacklevel=2)
            ap = float('nan')
        curves[setting] = PRCurve(thresholds, precision, recall, ap)
    return APResult(curves)
