"""Tests for the yx multibox loss (smooth-L1 + cross-entropy with hard negative mining)."""

import jax
import jax.numpy as jnp
import numpy as np

from safefakes_jax.detection import multibox_loss as ml

loss_jit = jax.jit(ml.multibox_loss)


def _np_loss(loc_p, conf_p, loc_t, labels, ratio=3):
    """Independent numpy/Python version: explicit loops, Python `sorted`."""
    b, a = labels.shape
    loc_sum, conf_sum, n_total = 0.0, 0.0, 0
    for i in range(b):
        pos = [k for k in range(a) if labels[i, k] > 0]
        n_total += len(pos)
        for k in pos:
            d = np.abs(loc_p[i, k] - loc_t[i, k])
            loc_sum += np.sum(np.where(d < 1, 0.5 * d * d, d - 0.5))
        ce = [np.log(np.sum(np.exp(conf_p[i, k]))) - conf_p[i, k, labels[i, k]] for k in range(a)]
        mine = [0.0 if k in pos else ce[k] for k in range(a)]
        num_neg = min(ratio * len(pos), a - 1)
        neg = sorted(range(a), key=lambda k: -mine[k])[:num_neg]
        for k in set(pos) | set(neg):
            conf_sum += ce[k]
    n = max(n_total, 1)
    return loc_sum / n, conf_sum / n


def test_hand_case_with_empty_image():
    # Image 0: one positive (anchor 0) -> 3 hard negatives: anchors 4, 2, 5 (largest face logit).
    # Image 1: no positives -> no negatives at all, although its anchors are very wrong.
    conf = np.zeros((2, 6, 2), np.float32)
    conf[0, :, 1] = [2.0, 0.5, 3.0, -1.0, 4.0, 1.0]
    conf[1, :, 1] = 10.0
    labels = np.zeros((2, 6), np.int32)
    labels[0, 0] = 1
    loc_p = np.zeros((2, 6, 4), np.float32)
    loc_p[0, 0] = [0.5, -2.0, 0.0, 3.0]
    loc_t = np.full((2, 6, 4), np.inf, np.float32)  # Never read outside positives.
    loc_t[0, 0] = 0.0
    mask = ml.hard_negative_mask(jnp.asarray(conf), jnp.asarray(labels))
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [2, 4, 5])
    assert not np.any(mask[1])
    loc_loss, conf_loss = loss_jit(loc_p, conf, loc_t, labels)
    # smooth-L1: 0.125 + 1.5 + 0 + 2.5; CE(pos) = softplus(-2), CE(neg) = softplus(logit).
    sp = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(loc_loss, 4.125, rtol=1e-6)
    np.testing.assert_allclose(conf_loss, sp(-2.0) + sp(3.0) + sp(4.0) + sp(1.0), rtol=1e-5)
    want = _np_loss(loc_p, conf, loc_t, labels)
    np.testing.assert_allclose([loc_loss, conf_loss], want, rtol=1e-5)


def test_no_positives_in_batch_is_zero():
    conf = np.random.default_rng(0).normal(size=(3, 8, 2)).astype(np.float32)
    out = loss_jit(np.zeros((3, 8, 4)), conf, np.zeros((3, 8, 4)), np.zeros((3, 8), np.int32))
    np.testing.assert_array_equal(out, [0.0, 0.0])


def test_num_neg_capped_at_a_minus_1():
    # 2 positives of 4 anchors: 3 * 2 = 6 > A - 1 = 3, so 3 "negatives" are ranked in, which
    # include a positive (loss zeroed); positives are still counted once.
    conf = np.array([[[0, 1], [0, 2], [0, 3], [0, -1]]], np.float32)
    labels = np.array([[1, 0, 0, 1]], np.int32)
    mask = ml.hard_negative_mask(jnp.asarray(conf), jnp.asarray(labels))
    assert int(mask.sum()) == 3 and bool(mask[0, 1]) and bool(mask[0, 2])
    z = np.zeros((1, 4, 4), np.float32)
    _, conf_loss = loss_jit(z, conf, z, labels)
    sp = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(conf_loss, (sp(-1) + sp(2) + sp(3) + sp(1)) / 2, rtol=1e-5)


def test_random_vs_numpy_and_grad():
    rng = np.random.default_rng(3)
    b, a = 4, 50
    labels = (rng.uniform(size=(b, a)) < 0.1).astype(np.int32)
    labels[2] = 0
    loc_p = rng.normal(size=(b, a, 4)).astype(np.float32) * 2
    loc_t = rng.normal(size=(b, a, 4)).astype(np.float32)
    conf = rng.normal(size=(b, a, 2)).astype(np.float32) * 3
    got = loss_jit(loc_p, conf, loc_t, labels)
    np.testing.assert_allclose(got, _np_loss(loc_p, conf, loc_t, labels), rtol=1e-5)

    def total(lp, cp):
        loc_l, conf_l = ml.multibox_loss(lp, cp, loc_t, labels)
        return loc_l + conf_l

    g_loc, g_conf = jax.jit(jax.grad(total, argnums=(0, 1)))(loc_p, conf)
    assert np.all(np.isfinite(g_loc)) and np.all(np.isfinite(g_conf))
    np.testing.assert_array_equal(g_loc[labels == 0], 0)  # Only positives regress.
    np.testing.assert_array_equal(g_conf[2], 0)  # The image without positives adds nothing.
