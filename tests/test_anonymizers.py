"""Tests for the anonymizer interface and the conventional methods, against numpy references."""

import dataclasses

import ml_collections
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from safefakes_jax.anonymizers import base, conventional

H, W = 90, 110
# Inside, across every border and corner, 1 px, 1 x N, entirely outside, empty, overlapping.
BOXES = np.array(
    [
        [20, 15, 30, 25],
        [-5, 40, 12, 14],
        [100, 3, 20, 9],
        [50, -4, 9, 11],
        [95, 80, 30, 30],
        [60, 50, 1, 1],
        [0, 0, 1, 1],
        [109, 89, 1, 1],
        [70, 30, 1, 17],
        [30, 60, 24, 1],
        [200, 10, 5, 5],
        [-30, -30, 10, 10],
        [10, 10, 0, 5],
        [10, 10, 5, -1],
        [25, 20, 30, 30],
    ]
)
OUTSIDE, EMPTY = (10, 11), (12, 13)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def box_mask(boxes, h=H, w=W):
    """Union of the clipped boxes, by explicit loops over rows and columns."""
    mask = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes:
        for r in range(y, y + bh):
            for c in range(x, x + bw):
                if 0 <= r < h and 0 <= c < w:
                    mask[r, c] = True
    return mask


def box_mean(img, k):
    """Mean over the k x k window at offsets -k//2 .. k-1-k//2, reflect-101 border, rint."""
    a = k // 2
    b = k - 1 - a
    padded = np.pad(img.astype(np.int64), ((a, b), (a, b), (0, 0)), mode='reflect')
    sums = sliding_window_view(padded, (k, k), axis=(0, 1)).sum(axis=(-1, -2))
    return np.rint(sums / (k * k)).astype(np.uint8)


def expected_records(method_record='anonymized'):
    return [
        base.OUTSIDE_IMAGE if i in OUTSIDE else base.EMPTY_BOX if i in EMPTY else method_record
        for i in range(len(BOXES))
    ]


def test_blackout_zeros_exactly_the_boxes(image):
    before = image.copy()
    result = base.create('blackout')(image, BOXES)
    np.testing.assert_array_equal(image, before)  # Input untouched.
    expected = image.copy()
    expected[box_mask(BOXES)] = 0
    np.testing.assert_array_equal(result.image, expected)
    assert result.records == expected_records()


def test_blur_is_the_25x25_mean_of_the_original_in_context(image):
    result = base.create('blur')(image, BOXES)
    expected = np.where(box_mask(BOXES)[..., None], box_mean(image, 25), image)
    np.testing.assert_array_equal(result.image, expected)
    assert result.records == expected_records()


@pytest.mark.parametrize('kernel', [3, 8, 18, 25])
def test_blur_other_kernels_and_tiny_images(kernel):
    img = np.random.default_rng(kernel).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 1, 1], [3, 2, 4, 4], [8, 6, 5, 5]])
    result = conventional.Blur(kernel=kernel)(img, boxes)
    expected = np.where(box_mask(boxes, 7, 9)[..., None], box_mean(img, kernel), img)
    if kernel % 2:  # No ties: exact.
        np.testing.assert_array_equal(result.image, expected)
    else:  # k * k even: OpenCV's small-kernel path breaks .5 ties its own way.
        assert np.abs(result.image.astype(int) - expected).max() <= 1


def test_gaussian_blur_option(image):
    import cv2

    result = conventional.Blur(kernel=25, filter='gaussian')(image, BOXES[:10])
    whole = cv2.GaussianBlur(image, (25, 25), 0)
    expected = np.where(box_mask(BOXES[:10])[..., None], whole, image)
    np.testing.assert_array_equal(result.image, expected)
    with pytest.raises(ValueError, match='odd'):
        conventional.Blur(kernel=24, filter='gaussian')
    with pytest.raises(ValueError, match='filter'):
        conventional.Blur(filter='median')


def test_fullblur_is_the_18x18_mean_of_the_whole_image(image):
    result = base.create('fullblur')(image, BOXES)
    np.testing.assert_array_equal(result.image, box_mean(image, 18))  # Anchor 9: -9 .. +8.
    assert result.records == expected_records()
    no_faces = base.create('fullblur')(image, np.zeros((0, 4)))
    np.testing.assert_array_equal(no_faces.image, box_mean(image, 18))
    assert no_faces.records == []


def area_weights(n, cells):
    """[cells, n]: the fraction of cell i's extent [i n/c, (i+1) n/c) that pixel r covers."""
    s = n / cells
    lo = np.arange(cells)[:, None] * s
    r = np.arange(n)[None, :]
    return np.clip(np.minimum(lo + s, r + 1) - np.maximum(lo, r), 0, None) / s


@pytest.mark.parametrize(
    'h, w', [(30, 40), (37, 23), (11, 64), (12, 5), (5, 12), (1, 57), (100, 100), (10, 11)]
)
def test_pixelate_cells_are_area_means(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.integers(0, 256, (h + 10, w + 10, 3), dtype=np.uint8)
    result = base.create('pixelate')(img, [[4, 6, w, h]])
    assert result.records == ['anonymized']
    region = img[6 : 6 + h, 4 : 4 + w].astype(np.float64)
    ch, cw = min(10, h), min(10, w)
    exact = np.einsum('ir,jc,rck->ijk', area_weights(h, ch), area_weights(w, cw), region)
    # Each pixel takes the cell under its centre: floor((x + 0.5) * cells / size).
    cy = np.floor((np.arange(h) + 0.5) * ch / h).astype(int)
    cx = np.floor((np.arange(w) + 0.5) * cw / w).astype(int)
    out = result.image[6 : 6 + h, 4 : 4 + w].astype(np.float64)
    # Correctly rounded area means (OpenCV breaks exact .5 ties either way).
    assert np.abs(out - exact[cy][:, cx]).max() <= 0.5 + 1e-9
    for i in range(ch):  # Blocks: every pixel of a cell has the same value.
        for j in range(cw):
            block = out[cy == i][:, cx == j]
            assert (block == block[0, 0]).all()
    outside = np.ones(img.shape[:2], bool)
    outside[6 : 6 + h, 4 : 4 + w] = False
    np.testing.assert_array_equal(result.image[outside], img[outside])


def test_pixelate_small_boxes_keep_or_blackout(image):
    boxes = np.array([[5, 5, 10, 10], [30, 30, 1, 1], [50, 50, 3, 8], [70, 10, 11, 10]])
    keep = base.create('pixelate', small_box='keep')(image, boxes)
    assert keep.records == ['skipped:smaller_than_cells'] * 3 + ['anonymized']
    np.testing.assert_array_equal(keep.image[:, :60], image[:, :60])
    black = base.create('pixelate')(image, boxes)  # Default: fails closed.
    assert black.records == ['fallback:smaller_than_cells'] * 3 + ['anonymized']
    np.testing.assert_array_equal(black.image[box_mask(boxes[:3])], 0)
    with pytest.raises(ValueError, match='small_box'):
        base.create('pixelate', small_box='maybe')


def test_pixelate_border_boxes_are_clipped(image):
    result = base.create('pixelate')(image, [[-7, 80, 40, 30]])  # Clipped to 33 x 10.
    clipped = base.create('pixelate')(image, [[0, 80, 33, 10]])
    np.testing.assert_array_equal(result.image, clipped.image)


def test_faces_come_from_the_original_image(image):
    """Overlaps hold the later face's result, computed from the original, not the output."""
    a, b = [10, 10, 40, 40], [30, 30, 40, 40]
    both = base.create('pixelate')(image, [a, b]).image
    only_b = base.create('pixelate')(image, [b]).image
    np.testing.assert_array_equal(both[30:70, 30:70], only_b[30:70, 30:70])


def test_zero_faces_and_bad_images(image):
    for name in base.names():
        result = base.create(name)(image, np.zeros((0, 4), np.int32))
        assert result.records == []
        if name != 'fullblur':
            np.testing.assert_array_equal(result.image, image)
    with pytest.raises(ValueError, match='RGB uint8'):
        base.create('blur')(image.astype(np.float32), BOXES)
    with pytest.raises(ValueError, match='RGB uint8'):
        base.create('blur')(image[..., 0], BOXES)


# --------------------------------------------------------------------------- interface


@dataclasses.dataclass(frozen=True)
class Flaky(base.Anonymizer):
    """Blacks out with 128; raises on wide faces, asks for fallback on tall ones, leaves
    1-pixel faces unchanged while claiming them anonymized."""

    name = 'flaky'

    def anonymize_face(self, original, out, face, rng):
        w, h = face.x1 - face.x0, face.y1 - face.y0
        if w == 1 and h == 1:
            return 'anonymized'
        if w > 25:
            out[face.region] = 7  # Partial work before the error must not survive either.
            raise ValueError('too wide')
        if h > 20:
            raise base.Fallback('too_tall')
        out[face.region] = 128
        return None


def test_fallbacks_black_out(image):
    boxes = np.array([[5, 5, 30, 10], [50, 5, 10, 25], [70, 40, 5, 5], [90, 60, 1, 1]])
    result = Flaky()(image, boxes)
    assert result.records == [
        'fallback:error:ValueError',
        'fallback:too_tall',
        'anonymized',
        'fallback:unchanged',
    ]
    for k in (0, 1, 3):
        np.testing.assert_array_equal(result.image[box_mask(boxes[k : k + 1])], 0)
    np.testing.assert_array_equal(result.image[box_mask(boxes[2:3])], 128)


class WholeImageFails(base.Anonymizer):
    def anonymize_image(self, original, out, faces, rng):
        out[...] = 255
        raise RuntimeError('model crashed')

    def anonymize_face(self, original, out, face, rng):
        raise AssertionError('not reached')


def test_whole_image_failure_blacks_out_every_face(image):
    result = WholeImageFails()(image, BOXES)
    assert result.records == expected_records('fallback:error:RuntimeError')
    np.testing.assert_array_equal(result.image[box_mask(BOXES)], 0)


class MinSize(conventional.Blackout):
    min_face_px = 10


def test_min_face_px_and_keypoints():
    img = np.full((40, 40, 3), 9, np.uint8)
    result = MinSize()(
        img,
        [[0, 0, 9, 30], [10, 10, 10, 3], [0, 0, 0, 0]],
        keypoints=[None, {'keypoints7': np.zeros((7, 3))}, None],
    )
    assert result.records == [base.BELOW_MIN_FACE_PX, 'anonymized', base.EMPTY_BOX]
    with pytest.raises(ValueError, match='keypoint entries'):
        MinSize()(img, [[0, 0, 9, 30]], keypoints=[])


def test_registry():
    assert {'blur', 'fullblur', 'pixelate', 'blackout'} <= set(base.names())
    assert 'io_floor' not in base.names()
    cfg = ml_collections.ConfigDict({'name': 'blur', 'kernel': 9, 'filter': 'box'})
    blur = base.create_from_config(cfg)
    assert isinstance(blur, conventional.Blur) and blur.kernel == 9
    assert blur.params() == {'kernel': 9, 'filter': 'box', 'sigma': 0.0}
    assert base.create_from_config({'name': 'fullblur'}).kernel == 18  # Paper defaults.
    assert base.create('pixelate').cells == 10 and base.create('blur').kernel == 25
    with pytest.raises(KeyError, match='unknown anonymizer'):
        base.create('deblur')
    with pytest.raises(ValueError, match='parameters: kernel, filter, sigma'):
        base.create('blur', kernal=3)
    with pytest.raises(ValueError, match='needs a "name"'):
        base.create_from_config({'kernel': 3})
    with pytest.raises(ValueError, match='already taken'):
        base.register('blur')(Flaky)
    assert base.clip_box([5, 5, 10, 10], 8, 12) == (5, 5, 12, 8)
    assert base.clip_box([12, 0, 3, 3], 8, 12) == base.OUTSIDE_IMAGE
    assert base.clip_box([-3, 0, 3, 3], 8, 12) == base.OUTSIDE_IMAGE
    assert base.clip_box([0, 0, 3, 0], 8, 12) == base.EMPTY_BOX


def test_batch_default_loops(image):
    rng = np.random.default_rng(0)
    items = [base.Item(image, BOXES[:3], rng=rng), base.Item(image, np.zeros((0, 4)))]
    results = base.create('blackout').anonymize_batch(items)
    assert [len(r.records) for r in results] == [3, 0]
    assert base.create('blackout').batch_size == 1
