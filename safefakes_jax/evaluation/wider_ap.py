"""WIDER FACE easy / medium / hard AP: the official MATLAB protocol, vectorised.

Follows `eval_tools` of WIDER FACE (`wider_eval.m`, `read_pred.m`, `norm_score.m`,
`evaluation.m`, `boxoverlap.m`, `VOCap.m`) step by step, as written down in
`../shared/reference/wider_eval.md` §5, and not the public Python port's defects (§6):

1. Predictions are read for every (event, image) of the ground truth; a missing file means no
   detections (its faces still count). Rows are sorted by score, descending, stably.
   A prediction *folder* in which no file matches any ground-truth image is an error
   (`NoMatchingPredictionsError`, naming the expected `<pred>/<event>/<image stem>.txt` and
   what was found), not AP 0: it is a wrong layout (e.g. `name.jpg.txt`, no event folders).
   A folder matching only some images gives a warning `matched N of M images`. In-memory
   mappings keep the plain rule: a missing key is an image without detections.
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

Prediction-file errors: a malformed row, a NaN / infinite value, a byte-order mark or bytes
that are not UTF-8 are a `wider.FormatError` naming the file and line; a count line that
disagrees with the rows is a warning, and the rows win. Predictions for an (event, image) not
in the ground truth are ignored with one warning giving their count. An event folder or file
that is a symlink resolving outside the prediction folder is a `root_paths.PathEscapeError`
(nothing outside the folder is read).
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Mapping

import numpy as np

from safefakes_jax.data import root_paths, wider, wider_mat

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
    """`{'easy': ap, 'medium': ap, 'hard': ap}` with the PR curves in `.curves`.

    Attributes:
      curves: setting -> `PRCurve`.
      matched: ground-truth images that had predictions (a file, or a key of the mapping).
      images: ground-truth images.
    """

    def __init__(self, curves: dict[str, PRCurve], matched: int = 0, images: int = 0):
        super().__init__({s: c.ap for s, c in curves.items()})
        self.curves = curves
        self.matched = matched
        self.images = images


class NoMatchingPredictionsError(FileNotFoundError):
    """A prediction folder in which no file matches a ground-truth image (a wrong layout)."""


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC AP with the precision envelope (`VOCap.m`); NaN precisions are ignored as MATLAB."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]  # Backward running max, NaN-ignoring.
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def read_prediction_file(path: str) -> np.ndarray:
    """`wider.read_prediction_file`, with numpy's C parser on the well-formed common case."""
    with open(path, 'rb') as f:
        data = f.read()
    if data.startswith((b'\xef\xbb\xbf', b'\xff\xfe', b'\xfe\xff')):
        return wider.read_prediction_file(path)  # Raises, naming the file and line.
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        return wider.read_prediction_file(path)  # Raises, naming the file and line.
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


_EXAMPLES = 3  # Unexpected entries of a prediction folder named in the no-match error.


def scan_prediction_folder(
    pred_dir: str | os.PathLike,
) -> tuple[dict[tuple[str, str], str], list[str]]:
    """The `<event>/<stem>.txt` files of a prediction folder, and a few other entries found.

    Returns:
      (`{(event, stem): path}`, up to `_EXAMPLES` relative names of entries that are not in
      that layout: files at the top level, other files or folders inside event folders).

    Raises:
      FileNotFoundError: `pred_dir` is not a folder.
      root_paths.PathEscapeError: an event folder or a `.txt` file is a symlink resolving
        outside `pred_dir`.
    """
    pred_dir = os.fspath(pred_dir)
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f'{pred_dir}: prediction folder not found')
    files: dict[tuple[str, str], str] = {}
    other: list[str] = []
    for event in sorted(os.listdir(pred_dir)):
        event_dir = os.path.join(pred_dir, event)
        if not os.path.isdir(event_dir):
            if len(other) < _EXAMPLES:
                other.append(event)
            continue
        root_paths.resolve_inside(pred_dir, event, pred_dir)
        for entry in sorted(os.scandir(event_dir), key=lambda e: e.name):
            if entry.name.endswith('.txt') and entry.is_file():
                name = f'{event}/{entry.name}'
                path = (
                    root_paths.resolve_inside(pred_dir, name, pred_dir)
                    if entry.is_symlink()
                    else entry.path
                )
                files[(event, entry.name[:-4])] = path
            elif len(other) < _EXAMPLES:
                other.append(f'{event}/{entry.name}' + ('/' if entry.is_dir() else ''))
    return files, other


def _no_match_message(
    pred_dir: str, files: Mapping[tuple[str, str], str], other: list[str], gt: wider_mat.GroundTruth
) -> str:
    im = gt.images[0]
    found = [f'{e}/{s}.txt' for e, s in list(files)[:_EXAMPLES]] + other
    found = found[:_EXAMPLES]
    what = (
        f'found {len(files)} <event>/*.txt file(s) with no ground-truth image, e.g. '
        if files
        else 'found '
    ) + (', '.join(found) if found else 'nothing')
    return (
        f'{pred_dir}: no prediction file matches any of the {len(gt.images)} ground-truth '
        f'images; expected <pred>/<event>/<image stem>.txt, e.g. '
        f'{os.path.join(pred_dir, im.event, im.stem + ".txt")}; {what}'
    )


def _gather_predictions(
    predictions: str | os.PathLike | Predictions, gt: wider_mat.GroundTruth
) -> tuple[list[np.ndarray], int]:
    """One float64 [N, 5] array per ground-truth image, in ground-truth order, and the number
    of ground-truth images that had predictions."""
    keys = [(im.event, im.stem) for im in gt.images]
    if isinstance(predictions, (str, os.PathLike)):
        pred_dir = os.fspath(predictions)
        files, other = scan_prediction_folder(pred_dir)
        matched = sum(1 for key in keys if key in files)
        if keys and not matched:
            raise NoMatchingPredictionsError(_no_match_message(pred_dir, files, other, gt))
        if matched < len(keys):
            warnings.warn(
                f'{pred_dir}: matched {matched} of {len(keys)} ground-truth images '
                '(the others count as images without detections)',
                stacklevel=3,
            )
        out = [
            read_prediction_file(files[key]) if key in files else np.zeros((0, 5)) for key in keys
        ]
        extra = len(set(files) - set(keys))
    else:
        matched = sum(1 for key in keys if key in predictions)
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
        warnings.warn(
            f'{extra} prediction images are not in the ground truth; ignored', stacklevel=3
        )
    return out, matched


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
        stop = max(int(np.searchsorted(pairs_before, base + _PAIR_CHUNK, side='right')), start + 1)
        dets = has_gt[start:stop]
        start = stop
        k = k_per_det[dets]
        pair_det = np.repeat(np.arange(len(dets)), k)
        # Boxes of an image are consecutive: pair p of a detection is box gt_start + p.
        pair_gt = np.repeat(gt_start[det_img[dets]] - (np.cumsum(k) - k), k) + np.arange(k.sum())
        b = det_boxes[dets]
        # boxoverlap.m: pixel-inclusive widths; non-overlapping pairs have IoU 0.
        w = np.minimum(gx2[pair_gt], b[pair_det, 2]) - np.maximum(gx1[pair_gt], b[pair_det, 0]) + 1
        keep = w > 0
        pair_det, pair_gt, w = pair_det[keep], pair_gt[keep], w[keep]
        h = np.minimum(gy2[pair_gt], b[pair_det, 3]) - np.maximum(gy1[pair_gt], b[pair_det, 1]) + 1
        keep = h > 0
        pair_det, pair_gt, w, h = pair_det[keep], pair_gt[keep], w[keep], h[keep]
        inter = w * h
        area_a = (gx2[pair_gt] - gx1[pair_gt] + 1) * (gy2[pair_gt] - gy1[pair_gt] + 1)
        area_b = (b[pair_det, 2] - b[pair_det, 0] + 1) * (b[pair_det, 3] - b[pair_det, 1] + 1)
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = inter / (area_a + area_b - inter)
        keep = iou >= iou_thresh
        pair_det, pair_gt, iou = pair_det[keep], pair_gt[keep], iou[keep]
        # Stable sort by (detection, -IoU): the first row of each detection is its match.
        order = np.lexsort((-iou, pair_det))
        first = np.unique(pair_det[order], return_index=True)[1]
        matched[dets[pair_det[order][first]]] = pair_gt[order][first]
    return matched


def evaluate(
    predictions: str | os.PathLike | Predictions,
    gt_dir: str | os.PathLike | wider_mat.GroundTruth,
    iou_thresh: float = 0.5,
    num_thresholds: int = 1000,
) -> APResult:
    """WIDER FACE AP of the easy, medium and hard settings (official protocol).

    Args:
      predictions: a prediction folder (`<event>/<image>.txt`: name, count, `x y w h score`
        rows) or an in-memory `{(event, image): array [N, 5] x y w h score}`.
      gt_dir: `eval_tools/ground_truth` (the four .mat files), or its `wider_mat.GroundTruth`.
      iou_thresh: matching threshold (official: 0.5).
      num_thresholds: score thresholds of the PR curve (official: 1000).

    Returns:
      `{'easy': ap, 'medium': ap, 'hard': ap}`, with the PR curves in `.curves` and the
      number of images with predictions in `.matched` (of `.images`).

    Raises:
      NoMatchingPredictionsError: a prediction folder with no file for any image.
      wider.FormatError: a bad prediction file (naming the file and line).
      root_paths.PathEscapeError: a symlink out of the prediction folder.
    """
    if not 0 < iou_thresh <= 1:
        raise ValueError(f'iou_thresh must be in (0, 1], got {iou_thresh}')
    gt = (
        gt_dir if isinstance(gt_dir, wider_mat.GroundTruth) else wider_mat.read_ground_truth(gt_dir)
    )
    per_image, n_matched = _gather_predictions(predictions, gt)

    # Flat ground truth: [x1 y1 x2 y2] with x2 = x + w, as evaluation.m.
    gt_count = np.array([len(im.boxes) for im in gt.images], np.int64)
    gt_start = np.cumsum(gt_count) - gt_count
    gt_boxes = np.concatenate([im.boxes for im in gt.images] + [np.zeros((0, 4))]).astype(
        np.float64
    )
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
            warnings.warn(
                f'WIDER setting {setting!r} has no kept faces; its AP is NaN', stacklevel=2
            )
            ap = float('nan')
        curves[setting] = PRCurve(thresholds, precision, recall, ap)
    return APResult(curves, n_matched, len(gt.images))
