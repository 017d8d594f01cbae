"""Tests for box coding (encode / decode / IoU) and yx `match_ssd` matching."""

import jax
import jax.numpy as jnp
import numpy as np

from safefakes_jax.detection import anchors as anchors_lib
from safefakes_jax.detection import box_coding, matching

# Four anchors (cx, cy, w, h): the image quadrants TL, BR, a small centre one, BL.
ANCHORS = np.array(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2], [0.25, 0.75, 0.5, 0.5]],
    np.float32,
)
match = jax.jit(matching.match)  # Eager op-by-op dispatch is several times slower here.


def _np_iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _np_match_ssd(truths, priors, threshold=0.35):
    """A literal numpy transcription of yx `match_ssd` (labels only)."""
    pf = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    overlaps = _np_iou(truths, pf)
    best_prior_idx = overlaps.argmax(1)
    best_truth_overlap, best_truth_idx = overlaps.max(0), overlaps.argmax(0)
    best_truth_overlap[best_prior_idx] = 2
    for j in range(len(best_prior_idx)):
        best_truth_idx[best_prior_idx[j]] = j
    conf = np.ones(len(priors), np.int32)
    conf[best_truth_overlap < threshold] = 0
    return conf, best_truth_idx


def test_encode_decode_round_trip_and_formula():
    rng = np.random.default_rng(0)
    a = anchors_lib.anchor_boxes(128)
    xy = rng.uniform(0, 0.8, (a.shape[0], 2))
    gt = np.concatenate([xy, xy + rng.uniform(0.01, 0.2, xy.shape)], 1).astype(np.float32)
    t = box_coding.encode(gt, a)
    np.testing.assert_allclose(box_coding.decode(t, a), gt, atol=1e-5)
    g = np.array([[0.1, 0.2, 0.3, 0.6]], np.float32)
    p = np.array([[0.25, 0.25, 0.5, 0.5]], np.float32)
    want = [
        (0.2 - 0.25) / (0.1 * 0.5),
        (0.4 - 0.25) / (0.1 * 0.5),
        np.log(0.2 / 0.5) / 0.2,
        np.log(0.4 / 0.5) / 0.2,
    ]
    np.testing.assert_allclose(box_coding.encode(g, p)[0], want, rtol=1e-5)
    t2 = jax.jit(box_coding.encode)(gt, a)
    np.testing.assert_allclose(t2, t, rtol=1e-6)


def test_iou_hand_case():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], np.float32)
    b = np.array([[1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]], np.float32)
    want = np.array([[1 / 7, 0, 1], [0, 0, 0.25]])
    np.testing.assert_allclose(jax.jit(box_coding.iou)(a, b), want, rtol=1e-6)


def test_forced_anchor_below_threshold():
    gt = np.array([[0.05, 0.05, 0.15, 0.15]], np.float32)  # IoU 0.04 with the TL anchor.
    loc, labels = match(gt, np.array([True]), ANCHORS)
    np.testing.assert_array_equal(labels, [1, 0, 0, 0])
    np.testing.assert_allclose(loc[0], box_coding.encode(gt, ANCHORS[:1])[0], rtol=1e-6)
    np.testing.assert_array_equal(loc[1:], 0)


def test_two_gts_competing():
    # Both GTs have the TL anchor as their best: the later GT takes it (yx's loop order).
    gt = np.array([[0, 0, 0.5, 0.5], [0.02, 0, 0.5, 0.5], [0.5, 0.5, 0.98, 1.0]], np.float32)
    loc, labels = match(gt, np.ones(3, bool), ANCHORS)
    np.testing.assert_array_equal(labels, [1, 1, 0, 0])
    np.testing.assert_allclose(loc[0], box_coding.encode(gt[1:2], ANCHORS[:1])[0], rtol=1e-6)
    np.testing.assert_allclose(loc[1], box_coding.encode(gt[2:3], ANCHORS[1:2])[0], rtol=1e-6)
    # An above-threshold anchor takes the GT with the higher IoU.
    gt = np.array([[0.0, 0.0, 0.6, 0.6], [0.3, 0.3, 0.7, 0.7]], np.float32)
    a = np.concatenate([ANCHORS, [[0.3, 0.3, 0.6, 0.6], [0.5, 0.5, 0.4, 0.4]]]).astype(np.float32)
    loc, labels = match(gt, np.ones(2, bool), a)
    want_labels, want_idx = _np_match_ssd(gt, a)
    np.testing.assert_array_equal(labels, want_labels)
    pos = want_labels > 0
    np.testing.assert_allclose(loc[pos], box_coding.encode(gt[want_idx[pos]], a[pos]), rtol=1e-5)


def test_padded_rows_ignored_and_no_gt():
    gt = np.array([[0.05, 0.05, 0.15, 0.15]], np.float32)
    loc1, lab1 = match(gt, np.array([True]), ANCHORS)
    # Padding that would match perfectly (and zero boxes) must change nothing.
    padded = np.concatenate([ANCHORS[1:2] * 0, gt, [[0.5, 0.5, 1, 1]]]).astype(np.float32)
    loc2, lab2 = match(padded, np.array([False, True, False]), ANCHORS)
    np.testing.assert_array_equal(lab1, lab2)
    np.testing.assert_allclose(loc1, loc2)
    loc0, lab0 = match(padded, np.zeros(3, bool), ANCHORS)
    np.testing.assert_array_equal(lab0, 0)
    np.testing.assert_array_equal(loc0, 0)
    assert np.all(np.isfinite(loc0))


def test_random_vs_yx_loop_jit_vmap():
    rng = np.random.default_rng(1)
    a = anchors_lib.anchor_boxes(256)
    m, batch = 6, 3
    xy = rng.uniform(0, 0.85, (batch, m, 2))
    gt = np.concatenate([xy, xy + rng.uniform(0.01, 0.15, xy.shape)], -1).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
    loc, labels = jax.jit(matching.match_batch)(gt, mask, a)
    assert loc.shape == (batch, a.shape[0], 4) and labels.dtype == jnp.int32
    for b in range(batch):
        lc, lb = match(gt[b], mask[b], a)
        np.testing.assert_array_equal(labels[b], lb)
        np.testing.assert_allclose(loc[b], lc, rtol=1e-5, atol=1e-6)
        if mask[b].any():
            want, idx = _np_match_ssd(gt[b][mask[b]], a)
            np.testing.assert_array_equal(labels[b], want)
            pos = want > 0
            enc = box_coding.encode(gt[b][mask[b]][idx[pos]], a[pos])
            np.testing.assert_allclose(loc[b][pos], enc, rtol=1e-4, atol=1e-5)
            assert labels[b].sum() >= mask[b].sum()  # Every GT got at least one anchor.
        else:
            assert labels[b].sum() == 0
