"""DSFD multi-scale + flip test (yx `wider_test.py`): schedule, flip, padding, fake and real nets.

The fake network "detects" the white square of a black test image: it finds the pixels whose
channels are all >= 128 (the mean-coloured padding is below that), and fires the anchor that
best overlaps their bounding box with the exact offsets (`box_coding.encode`). Any error in
resizing, padding, flipping or scaling back shows up as a shifted box.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.detection import anchors, box_coding
from safefakes_jax.detection import multiscale_test as mst
from safefakes_jax.models import dsfd

BG, FG = (6.0, -6.0), (-6.0, 6.0)  # Logits: face probability ~6e-6 and ~1.


def _fire(hp, wp, boxes_px):
    """(loc2, conf2) [1, A, .] of a `hp` x `wp` input firing one anchor per pixel box."""
    anchors = mst.padded_anchors(hp, wp)
    loc = np.zeros((1, len(anchors), 4), np.float32)
    conf = np.tile(np.float32(BG), (1, len(anchors), 1))
    lo, hi = anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2
    for box in boxes_px:
        b = np.asarray(box, np.float32) / np.float32([wp, hp, wp, hp])
        inter = np.prod(np.clip(np.minimum(hi, b[2:]) - np.maximum(lo, b[:2]), 0, None), axis=1)
        k = int(np.argmax(inter / (np.prod(b[2:] - b[:2]) + np.prod(anchors[:, 2:], 1) - inter)))
        loc[0, k] = np.asarray(box_coding.encode(jnp.asarray(b), jnp.asarray(anchors[k])))
        conf[0, k] = FG
    return loc, conf


def _white_square_predict(shapes=None):
    def predict(batch):
        assert batch.dtype == np.uint8 and batch.shape[0] == 1
        img = batch[0]
        hp, wp = img.shape[:2]
        if shapes is not None:
            shapes.append((hp, wp))
        ys, xs = np.nonzero((img >= 128).all(axis=-1))
        boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if xs.size else []
        return _fire(hp, wp, boxes)

    return predict


def _image(h, w, box):
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


# ------------------------------------------------------------------------------ schedule


def _scales(passes):
    return [(pytest.approx(p.scale), p.flip, p.keep) for p in passes]


def test_schedule_small_image_doubles_up_to_max():
    # 100 x 150: max = sqrt(1.5e6 / 15000) = 10 -> bt 2, 4, 8, then max (10); bt ends 16 > 1.
    shrink, passes = mst.scale_schedule(100, 150)
    assert shrink == 1.0
    small = mst.KEEP_SMALL
    assert [(p.scale, p.flip, p.keep) for p in passes] == _scales(
        [
            mst.ScalePass(1.0),
            mst.ScalePass(1.0, True),
            mst.ScalePass(0.5, keep=mst.KEEP_LARGE),
            mst.ScalePass(2.0, keep=small),
            mst.ScalePass(4.0, keep=small),
            mst.ScalePass(8.0, keep=small),
            mst.ScalePass(10.0, keep=small),
        ]
    )
    # max = 2 exactly (500 x 750): one bt pass at 2, no doubling.
    _, passes = mst.scale_schedule(500, 750)
    assert [p.scale for p in passes[3:]] == pytest.approx([2.0])
    assert passes[3].keep == small


def test_schedule_mid_images():
    # 1000 x 1000: max = sqrt(1.5) = 1.2247 -> shrink 1, st .5, bt = max (> 1: small faces).
    m = np.sqrt(1.5)
    shrink, passes = mst.scale_schedule(1000, 1000)
    assert shrink == 1.0
    assert [p.scale for p in passes] == pytest.approx([1, 1, 0.5, m])
    assert [p.keep for p in passes] == ['all', 'all', 'large', 'small']
    # 1200 x 1500: max = sqrt(1.5 / 1.8) = .9129 -> shrink = max, st .5, bt = (.5 + max) / 2.
    m = np.sqrt(1.5 / 1.8)
    shrink, passes = mst.scale_schedule(1200, 1500)
    assert shrink == pytest.approx(m)
    assert [p.scale for p in passes] == pytest.approx([m, m, 0.5, (0.5 + m) / 2])
    assert [p.keep for p in passes] == ['all', 'all', 'large', 'large']


def test_schedule_huge_image_shrinks():
    # 3000 x 4000: max = sqrt(.125) = .35355 < .75 -> st = max / 2, bt = (st + max) / 2.
    m = np.sqrt(0.125)
    shrink, passes = mst.scale_schedule(3000, 4000)
    assert shrink == pytest.approx(m)
    assert [p.scale for p in passes] == pytest.approx([m, m, m / 2, 0.75 * m])
    assert [p.flip for p in passes] == [False, True, False, False]
    assert [p.keep for p in passes] == ['all', 'all', 'large', 'large']


def test_schedule_max_side_caps_and_dedups():
    # 100 x 150, max_side 600: cap 4 -> bt 2, 4, 8 -> 4, 10 -> 4 run as 2, 4.
    shrink, passes = mst.scale_schedule(100, 150, max_side=600)
    assert shrink == 1.0
    assert [p.scale for p in passes] == pytest.approx([1, 1, 0.5, 2, 4])
    assert passes[-1].keep == mst.KEEP_SMALL
    shrink, passes = mst.scale_schedule(1000, 1000, max_side=500)
    assert [p.scale for p in passes] == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_keep_filter_sides_plus_one():
    d = np.array(
        [[0, 0, 29, 10, 0.9], [0, 0, 30, 10, 0.8], [0, 0, 98, 200, 0.7], [0, 0, 99, 200, 0.6]],
        np.float64,
    )  # sides 30x11, 31x11, 99x201, 100x201
    np.testing.assert_array_equal(mst.keep_filter(d, mst.KEEP_LARGE)[:, 4], [0.8, 0.7, 0.6])
    np.testing.assert_array_equal(mst.keep_filter(d, mst.KEEP_SMALL)[:, 4], [0.9, 0.8, 0.7])
    assert mst.keep_filter(d, mst.KEEP_ALL).shape == (4, 5)


# -------------------------------------------------------------------------- flip, padding


def test_flip_mapping():
    d = np.array([[10.0, 20.0, 50.0, 60.0, 0.9]])
    np.testing.assert_allclose(mst.flip_boxes(d, 96), [[46, 20, 86, 60, 0.9]])
    np.testing.assert_allclose(mst.flip_boxes(mst.flip_boxes(d, 96), 96), d)
    # Pixels 10..49 of a 96-wide image land on 46..85 once flipped: [W - x2, W - x1).
    img = _image(80, 96, (10, 20, 50, 60))
    xs = np.nonzero(img[40, ::-1, 0])[0]
    assert (xs.min(), xs.max() + 1) == (46, 86)


def test_bucket_padding_shape_and_mean_fill():
    assert mst.padded_shape(100, 150) == (128, 256)
    assert mst.padded_shape(128, 256) == (128, 256)
    assert mst.padded_shape(129, 1) == (256, 128)
    assert mst.padded_shape(10, 40, bucket=1) == (32, 40)
    img = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    padded = mst.pad_to_bucket(img)
    assert padded.shape == (128, 256, 3) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[:100, :150], img)
    x = np.asarray(dsfd.preprocess(jnp.asarray(padded[None])))[0]
    assert not x[100:].any() and not x[:, 150:].any()
    # The padded anchors at 640 are the training anchors.
    np.testing.assert_array_equal(mst.padded_anchors(640, 640), anchors.shot_anchors(640)[1])


def test_detections_in_padding_dropped_and_clipped():
    img = np.zeros((100, 100, 3), np.uint8)  # -> padded 128 x 128 at scale 1.
    inputs = []

    def predict(batch):
        inputs.append(batch)
        return _fire(128, 128, [[104, 40, 124, 60], [80, 40, 110, 60]])  # centres x 114, 95.

    dets = mst.detect_at_scale(img, predict, 1.0)
    assert inputs[0].shape == (1, 128, 128, 3)
    np.testing.assert_array_equal(
        inputs[0][0, 100:, :], np.broadcast_to([123, 117, 104], (28, 128, 3))
    )
    assert dets.shape == (1, 5)
    np.testing.assert_allclose(dets[0, :4], [80, 40, 100, 60], atol=1e-3)
    dets = mst.detect_at_scale(img, predict, 1.0, clip=False)
    np.testing.assert_allclose(dets[0, :4], [80, 40, 110, 60], atol=1e-3)
    # At scale .5 the image is 50 x 50 in the 128 x 128 input: both centres are in the padding.
    assert mst.detect_at_scale(img, predict, 0.5).shape == (0, 5)


# ------------------------------------------------------------------------ whole procedure


def test_fake_net_recovers_box_through_every_pass():
    h, w, box = 80, 96, (10, 20, 50, 60)
    img = _image(h, w, box)
    shapes = []
    predict = _white_square_predict(shapes)
    _, passes = mst.scale_schedule(h, w)
    assert len(passes) == 7 and passes[1].flip  # 1, 1 flipped, .5, 2, 4, 8, 13.98
    for p in passes:
        dets = mst.detect_at_scale(img, predict, p.scale, flip=p.flip)
        assert dets.shape == (1, 5), p
        np.testing.assert_allclose(dets[0, :4], box, atol=2.0, err_msg=str(p))
    dets = mst.detect_multiscale(img, predict)
    assert dets.shape == (1, 5)
    np.testing.assert_allclose(dets[0, :4], box, atol=1.0)
    assert dets[0, 4] > 0.99
    assert all(hp % 128 == 0 and wp % 128 == 0 for hp, wp in shapes)
    # Off-centre square: a missing or wrong flip-back would give a second cluster at x 46..86.
    img = _image(h, w, (6, 30, 38, 62))
    dets = mst.detect_multiscale(img, _white_square_predict(), bucket=64)
    np.testing.assert_allclose(dets[:, :4], [[6, 30, 38, 62]], atol=1.0)


def test_empty_outputs():
    img = np.zeros((60, 70, 3), np.uint8)
    dets = mst.detect_multiscale(img, _white_square_predict(), max_side=300)
    assert dets.shape == (0, 5)
    with pytest.raises(ValueError, match='RGB uint8'):
        mst.detect_multiscale(img[..., 0], _white_square_predict())


def test_real_tiny_dsfd_end_to_end():
    model = dsfd.DSFD(width=0.0625)
    # Random weights of the right shapes (a real `init` compiles for about a minute on CPU).
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes['params']
    )
    predict = mst.make_predict(model, params)
    shapes = []

    def recording(batch):
        shapes.append(batch.shape[1:3])
        return predict(batch)

    img = np.random.default_rng(1).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    # Passes 1, 1 (flip), .5, 2, 8/3 (capped) -> padded 128x128 and 256x256 only.
    dets = mst.detect_multiscale(img, recording, max_side=256)
    assert sorted(set(shapes)) == [(128, 128), (256, 256)]
    assert len(shapes) == 5
    assert dets.ndim == 2 and dets.shape[1] == 5 and dets.shape[0] <= 750
    assert np.isfinite(dets).all()
    if hasattr(predict.jitted, '_cache_size'):
        assert predict.jitted._cache_size() == 2
