"""Tests of the tf.data face-crop pipeline for GAN training (DeepPrivacy augmentation)."""

import itertools

import cv2
import numpy as np
import pytest

from safefakes_jax.data import face_crop_pipeline as fcp
from safefakes_jax.data import face_crops


def make_crops(n: int = 10, size: int = 16, box=(2, 3, 10, 12), seed: int = 0):
    """`n` random crops; keypoint k of every face at pixel centre (k + 1, 2k + 1), nose absent
    in odd rows."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 7, 3), np.float32)
    kp[:, :, 0] = np.arange(7) + 1
    kp[:, :, 1] = 2 * np.arange(7) + 1
    kp[:, :, 2] = 1
    kp[1::2, 0] = 0
    return face_crops.FaceCrops(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        boxes=np.tile(np.asarray(box, np.float32), (n, 1)),
        keypoints7=kp,
        landmarks68=np.zeros((n, 68, 2), np.float32),
        identity=np.arange(n, dtype=np.int32),
        source_image=np.array([f'{i}.png' for i in range(n)]),
        face_index=np.arange(n, dtype=np.int32),
        crop_boxes=np.zeros((n, 4), np.int32),
    )


def batches(crops, n_batches, batch_size=4, resolution=16, seed=0, **kwargs):
    kwargs.setdefault('process_index', 0)
    kwargs.setdefault('process_count', 1)
    ds = fcp.make_gan_dataset(crops, batch_size, resolution, seed, **kwargs)
    return list(itertools.islice(fcp.as_numpy_batches(ds), n_batches))


def examples(bs) -> dict[int, dict]:
    """{position: example} of a list of batches."""
    out = {}
    for b in bs:
        for i, p in enumerate(b['position']):
            out[int(p)] = {k: v[i] for k, v in b.items()}
    return out


@pytest.mark.parametrize('resolution', [8, 16, 32])
def test_shapes_and_dtypes(resolution):
    crops = make_crops()
    for train in (True, False):
        (b,) = batches(crops, 1, 4, resolution, train=train)
        assert b['image'].dtype == np.uint8 and b['image'].shape == (4, resolution, resolution, 3)
        assert b['box'].dtype == np.int32 and b['box'].shape == (4, 4)
        assert b['keypoints'].dtype == np.float32 and b['keypoints'].shape == (4, 7, 2)
        assert b['position'].dtype == np.int64 and b['position'].shape == (4,)
        assert b['index'].dtype == np.int64 and b['valid'].dtype == bool and b['valid'].all()
        assert np.all(b['box'][:, 2:] - b['box'][:, :2] >= 1)
        assert np.all((b['box'] >= 0) & (b['box'] <= resolution))


def test_eval_is_unaugmented_resized_crops_in_order_with_padding():
    crops = make_crops(10)
    bs = batches(crops, 10, 4, 8, train=False)
    assert len(bs) == 3 == fcp.num_eval_batches(10, 4, 1)
    index = np.concatenate([b['index'] for b in bs])
    valid = np.concatenate([b['valid'] for b in bs])
    np.testing.assert_array_equal(index, list(range(10)) + [-1, -1])
    np.testing.assert_array_equal(valid, [True] * 10 + [False] * 2)
    np.testing.assert_array_equal(bs[-1]['position'], [8, 9, -1, -1])
    for b in bs:
        for i, row in enumerate(b['index']):
            if row < 0:
                assert not b['image'][i].any() and b['box'][i].tolist() == [0, 0, 1, 1]
                assert np.isnan(b['keypoints'][i]).all()
                continue
            area = cv2.resize(crops.images[row], (8, 8), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(b['image'][i], area)
            # floor([2, 3, 10, 12] * 8 / 16) = [1, 1, 5, 6]: no jitter, no flip.
            assert b['box'][i].tolist() == [1, 1, 5, 6]
            kp = b['keypoints'][i]
            np.testing.assert_allclose(kp[1:, 0], (np.arange(1, 7) + 1 + 0.5) / 16)
            np.testing.assert_allclose(kp[1:, 1], (2 * np.arange(1, 7) + 1 + 0.5) / 16)
            assert np.isnan(kp[0]).all() == bool(row % 2)


def test_eval_hosts_yield_the_same_number_of_batches_and_cover_the_data():
    crops = make_crops(11)
    per_host = [
        batches(crops, 10, 4, 16, train=False, process_index=h, process_count=2) for h in (0, 1)
    ]
    assert [len(b) for b in per_host] == [2, 2] == [fcp.num_eval_batches(11, 4, 2)] * 2
    rows = [np.concatenate([b['index'][b['valid']] for b in bs]) for bs in per_host]
    np.testing.assert_array_equal(rows[0], range(6))
    np.testing.assert_array_equal(rows[1], range(6, 11))


def test_flip_hand_case():
    """An asymmetric image and known keypoints: the flip mirrors image and box, maps x to
    1 - x and keeps every keypoint in its channel (left eye stays channel 1)."""
    n, s = 1, 16
    crops = make_crops(n, s, box=(2, 3, 7, 12))
    crops.images[:] = 0
    crops.images[0, :, :2, 0] = 255  # Red strip on the left.
    crops.images[0, 5, 2] = (0, 255, 0)  # Green pixel at column 2, row 5.
    crops.keypoints7[0, 1, :2] = (2, 5)  # Left eye on the green pixel.
    crops.keypoints7[0, 2, :2] = (12, 5)  # Right eye.
    bs = batches(crops, 50, 4, s, box_jitter=0.0)
    flipped = 0
    for ex in examples(bs).values():
        img, box, kp = ex['image'], ex['box'].tolist(), ex['keypoints']
        if box == [2, 3, 7, 12]:
            np.testing.assert_array_equal(img, crops.images[0])
            np.testing.assert_allclose(kp[1], [2.5 / 16, 5.5 / 16])
            continue
        flipped += 1
        assert box == [16 - 7, 3, 16 - 2, 12]
        np.testing.assert_array_equal(img, crops.images[0, :, ::-1])
        assert img[:, -2:, 0].min() == 255 and img[:, :-2, 0].max() == 0
        assert tuple(img[5, 16 - 1 - 2]) == (0, 255, 0)
        # Channel 1 (left eye) now on the mirrored green pixel, centre column 13: not swapped.
        np.testing.assert_allclose(kp[1], [1 - 2.5 / 16, 5.5 / 16], atol=1e-6)
        np.testing.assert_allclose(kp[1, 0], (16 - 1 - 2 + 0.5) / 16, atol=1e-6)
        np.testing.assert_allclose(kp[2], [1 - 12.5 / 16, 5.5 / 16], atol=1e-6)
    assert 60 <= flipped <= 140  # 200 draws at p = 0.5.
    (b,) = batches(crops, 1, 200, s, box_jitter=0.0, flip=False)
    assert (b['box'] == [2, 3, 7, 12]).all()


@pytest.mark.parametrize('resolution', [128, 96])
def test_box_jitter_is_dp_v1_bounded_by_2_percent(resolution):
    s = 128
    crops = make_crops(3, s, box=(14, 20, 114, 100))  # 100 x 80 px.
    base = fcp.scaled_boxes(crops.boxes[0], s, resolution)
    w, h = base[2] - base[0], base[3] - base[1]
    (b,) = batches(crops, 1, 300, resolution, flip=False)
    d = b['box'].astype(int) - base
    assert np.all(np.abs(d[:, [0, 2]]) <= 0.02 * w + 1e-9)
    assert np.all(np.abs(d[:, [1, 3]]) <= 0.02 * h + 1e-9)
    # One fraction for the whole box, about its centre: opposite edges move oppositely.
    np.testing.assert_array_equal(d[:, 0], -d[:, 2])
    np.testing.assert_array_equal(d[:, 1], -d[:, 3])
    assert np.all(np.sign(d[:, 0]) * np.sign(d[:, 1]) >= 0)
    assert len(np.unique(d[:, 0])) >= 3  # It does move (here by up to 2 px).
    # Versus the float box in crop pixels: within 2 % plus 1 px of rounding.
    exact = crops.boxes[0] * resolution / s
    wh = np.tile(exact[2:] - exact[:2], 2)
    assert np.all(np.abs(b['box'] - exact) <= 0.02 * wh + 1)


def test_jitter_box_clips_and_keeps_1px():
    np.testing.assert_array_equal(fcp.jitter_box([0, 0, 100, 50], 0.02, 100), [0, 0, 100, 51])
    np.testing.assert_array_equal(fcp.jitter_box([10, 10, 60, 60], -0.02, 100), [11, 11, 59, 59])
    np.testing.assert_array_equal(fcp.jitter_box([5, 5, 30, 30], 0.039, 100), [5, 5, 30, 30])
    np.testing.assert_array_equal(fcp.scaled_boxes([15.9, 0, 16, 3], 16, 8), [7, 0, 8, 1])
    np.testing.assert_array_equal(fcp.scaled_boxes([16, 2, 16, 2.2], 16, 8), [7, 1, 8, 2])


def test_determinism_per_seed():
    crops = make_crops(10)
    a = batches(crops, 6, 4, 16, seed=3)
    b = batches(crops, 6, 4, 16, seed=3)
    c = batches(crops, 6, 4, 16, seed=4)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any((x['index'] != z['index']).any() for x, z in zip(a, c, strict=True))


def test_each_epoch_is_a_new_permutation_of_the_rows():
    crops = make_crops(10)
    ex = examples(batches(crops, 10, 5, 16, seed=1))
    epochs = [[ex[p]['index'] for p in range(e * 10, e * 10 + 10)] for e in range(5)]
    for e in epochs:
        assert sorted(e) == list(range(10))
    assert len({tuple(e) for e in epochs}) == 5


def test_resume_gives_the_examples_of_an_uninterrupted_stream():
    crops = make_crops(10)
    full = examples(batches(crops, 8, 4, 16, seed=2))  # Positions 0..31.
    k = 7  # Not a multiple of the batch, and the stream crosses epochs.
    resumed = examples(batches(crops, 5, 4, 16, seed=2, start_position=k))
    assert sorted(resumed) == list(range(k, k + 20))
    for p, ex in resumed.items():
        for key in ('image', 'box', 'keypoints', 'index'):
            np.testing.assert_array_equal(ex[key], full[p][key], err_msg=f'{key} at {p}')


def test_two_hosts_are_disjoint_and_cover_the_data():
    crops = make_crops(11)
    seen = []
    for h in (0, 1):
        ex = examples(batches(crops, 6, 2, 16, seed=0, process_index=h, process_count=2))
        n = len(fcp.host_rows(11, h, 2))
        epoch0 = sorted(int(ex[p]['index']) for p in range(n))
        assert len(set(epoch0)) == n
        assert {int(e['index']) for e in ex.values()} == set(epoch0)
        seen.append(set(epoch0))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(11))


def test_default_host_comes_from_jax():
    crops = make_crops(4)
    (b,) = batches(crops, 1, 4, 16, process_index=None, process_count=None)
    assert sorted(b['index'].tolist()) == [0, 1, 2, 3]


def test_bad_arguments_are_clear_errors():
    crops = make_crops(4)
    make = fcp.make_gan_dataset
    with pytest.raises(ValueError, match='process_index'):
        make(crops, 2, 16, 0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match='no examples'):
        make(crops, 2, 16, 0, process_index=4, process_count=5)
    with pytest.raises(ValueError, match='seed'):
        make(crops, 2, 16, -1, process_index=0, process_count=1)
    with pytest.raises(ValueError, match='box_jitter'):
        make(crops, 2, 16, 0, process_index=0, process_count=1, box_jitter=0.7)
    with pytest.raises(ValueError, match='start_position'):
        make(crops, 2, 16, 0, train=False, start_position=3, process_index=0, process_count=1)
    bad = make_crops(4)
    bad.keypoints7 = bad.keypoints7[:, :5]
    with pytest.raises(ValueError, match='keypoints7'):
        make(bad, 2, 16, 0, process_index=0, process_count=1)
