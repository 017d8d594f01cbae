"""Tests for the DSFD anchors (yx PriorBox)."""

import itertools
import math

import numpy as np
import pytest

from safefakes_jax.detection import anchors


def _prior_box_loop(h, w, feature_maps, steps, sizes, ar=1.0):
    """A literal transcription of yx `PriorBox.forward` (one aspect ratio)."""
    mean = []
    for k, (fh, fw) in enumerate(feature_maps):
        for i, j in itertools.product(range(fh), range(fw)):
            f_kw, f_kh = w / steps[k], h / steps[k]
            s_kw, s_kh = sizes[k] / w, sizes[k] / h
            mean += [(j + 0.5) / f_kw, (i + 0.5) / f_kh, s_kw / math.sqrt(ar), s_kh * math.sqrt(ar)]
    return np.asarray(mean, np.float32).reshape(-1, 4)


def test_count_and_levels_at_640():
    a = anchors.anchor_boxes(640)
    assert a.shape == (34125, 4) and a.dtype == np.float32
    maps = anchors.feature_map_sizes(640)
    assert maps == [(160, 160), (80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    assert anchors.feature_map_sizes(640, rule='torch') == maps
    start = 0
    for (fh, fw), step, size in zip(maps, anchors.STEPS, anchors.SIZES, strict=True):
        level = a[start : start + fh * fw]
        np.testing.assert_allclose(level[:, 2:], size / 640, rtol=1e-6)
        # Row-major: first two cells differ in cx by one stride; first column cy by one stride.
        np.testing.assert_allclose(level[0, :2], [step / 2 / 640] * 2, rtol=1e-6)
        np.testing.assert_allclose(level[1, 0] - level[0, 0], step / 640, rtol=1e-5)
        np.testing.assert_allclose(level[fw, 1] - level[0, 1], step / 640, rtol=1e-5)
        start += fh * fw
    assert start == 34125


def test_matches_yx_loop_non_square():
    h, w = 200, 328
    maps = anchors.feature_map_sizes((h, w))
    assert maps[0] == (50, 82) and maps[-1] == (2, 3)
    got = anchors.anchor_boxes((h, w))
    want = _prior_box_loop(h, w, maps, anchors.STEPS, anchors.SIZES)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_torch_rule_differs_off_multiples():
    assert anchors.feature_map_sizes(600, rule='ceil') == [(s, s) for s in (150, 75, 38, 19, 10, 5)]
    assert anchors.feature_map_sizes(600, rule='torch') == [(s, s) for s in (150, 75, 37, 18, 9, 5)]
    maps = anchors.feature_map_sizes(600, rule='torch')
    a = anchors.anchor_boxes(600, feature_maps=maps)
    assert a.shape[0] == sum(fh * fw for fh, fw in maps)
    with pytest.raises(ValueError):
        anchors.feature_map_sizes(600, rule='floor')


def test_first_shot_and_aspect_ratio():
    assert anchors.first_shot_sizes() == (8, 16, 32, 64, 128, 256)
    sq = anchors.anchor_boxes(640, sizes=anchors.first_shot_sizes())
    np.testing.assert_allclose(sq[0, 2:], 8 / 640, rtol=1e-6)
    tall = anchors.anchor_boxes(640, aspect_ratio=1.5)
    np.testing.assert_allclose(tall[:, 3] / tall[:, 2], 1.5, rtol=1e-5)  # h = 1.5 w
    np.testing.assert_allclose(tall[:, 2] * tall[:, 3], sq[:, 2] * sq[:, 3] * 4, rtol=1e-5)
    np.testing.assert_allclose(tall[:, :2], sq[:, :2])
    want = _prior_box_loop(
        640, 640, anchors.feature_map_sizes(640), anchors.STEPS, anchors.SIZES, ar=1.5
    )
    np.testing.assert_allclose(tall, want, rtol=1e-6)
