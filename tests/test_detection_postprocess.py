"""Tests for host-side NMS, box voting, detection decoding and WIDER rows."""

import numpy as np

from safefakes_jax.detection import anchors as anchors_lib
from safefakes_jax.detection import box_coding, postprocess


def _nms_loop(boxes, scores, thresh, top_k):
    """A transcription of yx / ssd.pytorch `nms`: ascending sort, pop the last."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    idx = np.argsort(scores, kind='stable')[::-1][:top_k][::-1]  # Ties: lower index first.
    keep = []
    while idx.size > 0:
        i = idx[-1]
        keep.append(i)
        idx = idx[:-1]
        w = np.clip(np.minimum(x2[idx], x2[i]) - np.maximum(x1[idx], x1[i]), 0, None)
        h = np.clip(np.minimum(y2[idx], y2[i]) - np.maximum(y1[idx], y1[i]), 0, None)
        inter = w * h
        iou = inter / (area[idx] - inter + area[i])
        idx = idx[iou <= thresh]
    return np.array(keep)


def _random_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, scale / 3, (n, 2))], 1)


def test_nms_vs_loop():
    rng = np.random.default_rng(0)
    for trial in range(5):
        boxes = _random_boxes(rng, 200)
        scores = rng.uniform(size=200)
        got = postprocess.nms(boxes, scores, 0.3, top_k=150 if trial else 5000)
        want = _nms_loop(boxes, scores, 0.3, 150 if trial else 5000)
        np.testing.assert_array_equal(got, want)
    got = postprocess.nms(boxes, scores, 0.3, keep_top_k=4)
    np.testing.assert_array_equal(got, _nms_loop(boxes, scores, 0.3, 5000)[:4])
    assert postprocess.nms(np.zeros((0, 4)), np.zeros(0)).shape == (0,)


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 4]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 90/110 > .3 -> 1 goes; IoU(3, 0) = 40/100 > .3 -> 0 goes; IoU(3, 1) = 36/104.
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.3), [3, 2])
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.5), [3, 0, 2])


def test_box_voting_hand_case():
    dets = np.array(
        [
            [0, 0, 9, 9, 0.9],  # cluster A top
            [1, 1, 10, 10, 0.6],  # +1-px IoU 81/119 with the top -> A
            [50, 50, 59, 59, 0.8],  # singleton -> dropped
            [100, 100, 119, 119, 0.7],  # cluster B top
            [100, 100, 117, 117, 0.3],  # IoU 324/400 -> B
            [0, 0, 3, 3, 0.5],  # IoU 16/100 < .3 with A's top: own singleton -> dropped
        ]
    )
    got = postprocess.box_voting(dets)
    a = (0.9 * np.array([0, 0, 9, 9]) + 0.6 * np.array([1, 1, 10, 10])) / 1.5
    b = (0.7 * np.array([100, 100, 119, 119]) + 0.3 * np.array([100, 100, 117, 117])) / 1.0
    want = np.array([[*a, 0.9], [*b, 0.7]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(postprocess.box_voting(dets, keep=1), want[:1])
    # Input order does not matter (sorted by score first).
    np.testing.assert_allclose(postprocess.box_voting(dets[::-1]), want, rtol=1e-12)


def test_box_voting_empty_cases():
    singletons = np.array([[0, 0, 9, 9, 0.9], [50, 50, 59, 59, 0.8]])
    assert postprocess.box_voting(singletons).shape == (0, 5)  # yx: NameError.
    assert postprocess.box_voting(np.zeros((0, 5))).shape == (0, 5)
    degenerate = np.array([[5, 5, 0, 0, 0.9], [5, 5, 0, 0, 0.8]])  # yx: may loop forever.
    assert postprocess.box_voting(degenerate).shape[1] == 5


def test_detections_from_outputs():
    a = anchors_lib.anchor_boxes(128)
    rng = np.random.default_rng(1)
    loc = rng.normal(size=a.shape).astype(np.float32) * 0.5
    np.testing.assert_allclose(
        postprocess.decode_np(loc, a), box_coding.decode(loc, a), rtol=1e-5, atol=1e-6
    )
    conf = np.zeros((a.shape[0], 2), np.float32)
    conf[:, 0] = 5.0  # Background everywhere (face probability ~0.007 < 0.05) ...
    hits = [10, 11, 500]  # ... except three anchors; 10 and 11 overlap heavily.
    conf[hits, 0] = 0.0
    conf[hits, 1] = [3.0, 2.0, 1.0]
    loc[:] = 0.0
    dets = postprocess.detections_from_outputs(loc, conf, a, (256, 128))
    assert dets.shape == (2, 5)
    p = 1 / (1 + np.exp(-np.array([3.0, 1.0])))
    np.testing.assert_allclose(dets[:, 4], p, rtol=1e-6)
    scale = np.array([256, 128, 256, 128])
    for row, k in zip(dets, [10, 500], strict=True):
        cx, cy, w, h = a[k]
        np.testing.assert_allclose(
            row[:4], np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * scale, rtol=1e-5
        )
    conf[:, 1] = -10.0
    assert postprocess.detections_from_outputs(loc, conf, a, (128, 128)).shape == (0, 5)


def test_to_wider_rows():
    rows = postprocess.to_wider_rows(np.array([[10, 20, 29, 59, 0.5]]))
    np.testing.assert_allclose(rows, [[10, 20, 20, 40, 0.5]])
    assert postprocess.to_wider_rows(np.zeros((0, 5))).shape == (0, 5)
