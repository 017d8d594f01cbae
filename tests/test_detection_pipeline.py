"""Tests for the DSFD augmentation and the tf.data training / evaluation pipelines."""

import os

import cv2
import numpy as np
import pytest

from safefakes_jax.data import detection_augment as aug
from safefakes_jax.data import detection_pipeline as dp
from tests.folders import write_wider_split

# Some tiny-folder images have more faces than MAX_BOXES on purpose.
pytestmark = pytest.mark.filterwarnings('ignore:an example has .* faces > max_boxes')

S = 128  # Output side of the pipeline tests (small: fast).
MAX_BOXES = 12


def make_wider(root, n_train=9, n_val=7, seed=0):
    """A tiny WIDER-layout folder: random JPEGs with faces (some at borders, some tiny)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (('train', n_train), ('val', n_val)):
        items = []
        for i in range(n):
            w, h = int(rng.integers(160, 320)), int(rng.integers(120, 240))
            name = f'{i % 3}--Event/{split}_{i}.jpg'
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            k = 0 if i == 4 else int(rng.integers(1, 6))
            side = rng.integers(2, 60, k)
            boxes = np.stack(
                [rng.integers(0, w - 60, k), rng.integers(0, h - 60, k), side, side], -1
            )
            if k:  # A face on the bottom-right corner.
                boxes[0] = [w - 20, h - 25, 20, 25]
            if i == 2:  # More faces than MAX_BOXES.
                boxes = np.stack(
                    [
                        rng.integers(0, w - 40, 20),
                        rng.integers(0, h - 40, 20),
                        rng.integers(10, 40, 20),
                        rng.integers(10, 40, 20),
                    ],
                    -1,
                )
            items.append((name, image, boxes, np.zeros((len(boxes), 6))))
        out[split] = write_wider_split(root, split, items)
    return out


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp('pipeline')
    anns = make_wider(str(base / 'wider'))
    return str(base / 'wider'), anns, str(base / 'data_dir')


def _train(folder, **kwargs):
    root, _, data_dir = folder
    args = dict(
        batch_size=4,
        image_size=S,
        max_boxes=MAX_BOXES,
        data_dir=data_dir,
        process_index=0,
        process_count=1,
    )
    args.update(kwargs)
    return dp.make_train_dataset(root, **args)


def _take(ds, n):
    return list(dp.as_numpy_batches(ds.take(n)))


def _xyxy(ann):
    b = ann.valid_boxes.astype(np.float64)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], -1)


# --------------------------------------------------------------------------- numpy augmentation


def _random_case(rng):
    w, h = int(rng.integers(40, 1200)), int(rng.integers(40, 1200))
    n = int(rng.integers(1, 12))
    side = np.exp(rng.uniform(0, np.log(min(w, h)), n))
    x1 = rng.uniform(-0.2, 1.0, n) * w  # Some boxes start outside: clipped like the builder.
    y1 = rng.uniform(-0.2, 1.0, n) * h
    boxes = np.stack([x1, y1, x1 + side, y1 + side * rng.uniform(0.5, 2, n)], -1)
    boxes = np.clip(boxes, 0, [w, h, w, h])
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if rng.uniform() < 0.3:  # Faces touching the image borders.
        boxes = np.concatenate([boxes, [[0, 0, 9, 11], [w - 7, h - 7, w, h]]])
    return w, h, boxes


@pytest.mark.parametrize('das', [0.0, 1.0])
def test_augmented_boxes_lie_inside_the_image(das):
    rng = np.random.default_rng(0)
    branches = set()
    for seed in range(400):
        w, h, boxes = _random_case(rng)
        g = aug.sample_geometry(
            boxes, w, h, np.random.default_rng(seed), out_size=S, anchor_sampling_prob=das
        )
        branches.add(g.branch)
        x0, y0, x1, y1 = g.window
        assert x1 > x0 and y1 > y0
        assert x0 < w and y0 < h and x1 > 0 and y1 > 0  # Shows part of the image.
        b = g.boxes
        assert b.dtype == np.float32 and b.shape[1] == 4
        assert np.all(b >= 0) and np.all(b <= S)
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
        assert np.all((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) >= 36 - 1e-3)
    assert ('das' if das else 'ssd') in branches


def test_boxes_follow_the_pixels():
    """Render a white face on black through random geometries: the box covers the blob."""
    w, h = 300, 200
    image = np.zeros((h, w, 3), np.uint8)
    face = np.array([[120.0, 70.0, 160.0, 120.0]])
    image[70:120, 120:160] = 255
    checked = 0
    for seed in range(60):
        g = aug.sample_geometry(face, w, h, np.random.default_rng(seed), out_size=S)
        if not len(g.boxes):
            continue
        x0, y0 = max(g.window[0], 0), max(g.window[1], 0)
        x1, y1 = min(g.window[2], w), min(g.window[3], h)
        out = aug.render(
            image[y0:y1, x0:x1], g.window, (x0, y0), S, cv2.INTER_NEAREST, g.mirror, None, (0, 0, 0)
        )
        ys, xs = np.nonzero(out[..., 0] > 127)
        bx1, by1, bx2, by2 = g.boxes[0]
        # Clipped boxes and blobs agree to within the rounding of one output pixel.
        assert abs(xs.min() - bx1) <= 1.5 and abs(xs.max() + 1 - bx2) <= 1.5
        assert abs(ys.min() - by1) <= 1.5 and abs(ys.max() + 1 - by2) <= 1.5
        checked += 1
    assert checked > 40


def test_mirror_hand_case():
    window = np.array([0, 0, 100, 100])
    boxes = aug.transform_boxes(np.array([[10.0, 20.0, 30.0, 40.0]]), window, 100, 0.0, True)
    np.testing.assert_allclose(boxes, [[70, 20, 90, 40]])
    crop = np.zeros((100, 100, 3), np.uint8)
    crop[20:40, 10:30] = 200
    out = aug.render(crop, window, (0, 0), 100, mirror=True)
    ys, xs = np.nonzero(out[..., 0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (70, 90, 20, 40)


def test_transform_keeps_centres_inside_clips_and_drops_tiny():
    window = np.array([100, 100, 200, 200])  # Output 200: scale 2.
    boxes = np.array(
        [
            [90.0, 90.0, 120.0, 120.0],  # Centre inside, clipped.
            [50.0, 50.0, 120.0, 120.0],  # Centre outside: dropped.
            [150.0, 150.0, 151.0, 151.0],  # 2 x 2 px at output: dropped.
            [150.0, 150.0, 153.0, 153.0],
        ]
    )  # 6 x 6 px: kept.
    out = aug.transform_boxes(boxes, window, 200, 6.0)
    np.testing.assert_allclose(out, [[0, 0, 40, 40], [100, 100, 106, 106]])


def test_pad_boxes_keeps_the_largest(monkeypatch):
    boxes = np.array([[0, 0, 1, 1], [0, 0, 5, 5], [0, 0, 2, 2], [0, 0, 4, 4]], np.float32)
    monkeypatch.setattr(aug, '_warned', False)
    with pytest.warns(UserWarning, match='keeping the largest'):
        padded, n = aug.pad_boxes(boxes, 2)
    assert n == 2
    np.testing.assert_array_equal(padded, [[0, 0, 5, 5], [0, 0, 4, 4]])
    padded, n = aug.pad_boxes(boxes[:1], 3)
    assert n == 1 and not padded[1:].any()


def test_photometric():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(aug.apply_photometric(img, aug.PHOTOMETRIC_IDENTITY), img)
    bright = aug.apply_photometric(img, np.array([1, 1.1, 1, 1, 0], np.float32))
    np.testing.assert_allclose(bright, np.clip(np.round(img * 1.1), 0, 255), atol=1)
    grey = aug.apply_photometric(img, np.array([1, 1, 1, 0.0, 0], np.float32))
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1  # Saturation 0: grey.
    params = [aug.sample_photometric(np.random.default_rng(s)) for s in range(200)]
    fired = np.mean([p[1:4] != 1 for p in params], 0)
    assert np.all((fired > 0.35) & (fired < 0.65))  # Each op p = 0.5.
    assert all(abs(p[4]) <= 18 for p in params) and all(0.875 <= p[1] <= 1.125 for p in params)


# --------------------------------------------------------------------------- tf.data pipelines


def test_train_batches_static_shapes_and_masks(folder):
    ds = _train(folder)
    spec = ds.element_spec
    assert spec['image'].shape == (4, S, S, 3) and spec['image'].dtype.name == 'uint8'
    assert spec['boxes'].shape == (4, MAX_BOXES, 4) and spec['boxes'].dtype.name == 'float32'
    assert spec['box_mask'].shape == (4, MAX_BOXES) and spec['box_mask'].dtype.name == 'bool'
    assert spec['filename'].shape == (4,) and spec['filename'].dtype.name == 'string'
    assert spec['position'].shape == (4,) and spec['position'].dtype.name == 'int64'
    for batch in _take(ds, 6):
        boxes, mask = batch['boxes'], batch['box_mask']
        n = mask.sum(1)
        # The mask is a prefix: real rows first, zero rows after.
        np.testing.assert_array_equal(mask, np.arange(MAX_BOXES)[None] < n[:, None])
        assert not boxes[~mask].any()
        real = boxes[mask]
        assert np.all(real >= 0) and np.all(real <= S)
        assert np.all(real[:, 2] > real[:, 0]) and np.all(real[:, 3] > real[:, 1])


def test_train_never_yields_zero_face_images(folder):
    root, anns, _ = folder
    empty = {a.name for a in anns['train'] if not len(a.valid_boxes)}
    assert empty
    names = {f.decode() for b in _take(_train(folder, augment=False), 8) for f in b['filename']}
    assert not names & empty


def test_unaugmented_boxes_are_the_stretched_originals(folder):
    root, anns, _ = folder
    by_name = {a.name: a for a in anns['train']}
    for batch in _take(_train(folder, augment=False, max_boxes=32), 3):
        for name, boxes, mask in zip(
            batch['filename'], batch['boxes'], batch['box_mask'], strict=True
        ):
            ann = by_name[name.decode()]
            img = cv2.imread(os.path.join(root, 'WIDER_train', 'images', ann.name))
            h, w = img.shape[:2]
            expected = _xyxy(ann) * [S / w, S / h, S / w, S / h]
            np.testing.assert_allclose(boxes[mask], expected, atol=1e-3)


def test_train_keeps_the_largest_boxes(folder):
    # Image 2 has 20 faces, more than MAX_BOXES: the batch rows are full, never more.
    counts = [b['box_mask'].sum(1) for b in _take(_train(folder, augment=False), 5)]
    assert np.concatenate(counts).max() == MAX_BOXES


def test_train_is_deterministic_per_seed(folder):
    a = _take(_train(folder, seed=3), 4)
    b = _take(_train(folder, seed=3), 4)
    c = _take(_train(folder, seed=4), 4)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x['image'], y['image']) for x, y in zip(a, c, strict=True))


def test_train_resumes_at_a_position(folder):
    root, anns, _ = folder
    n_faces = sum(1 for a in anns['train'] if len(a.valid_boxes))
    full = _take(_train(folder, seed=5, batch_size=3), 6)  # Crosses two epoch boundaries.
    positions = np.concatenate([b['position'] for b in full])
    assert np.all(np.diff(positions) > 0)
    assert len({f for b in full[:3] for f in b['filename']}) == n_faces  # 9 = one epoch.
    resume = int(full[1]['position'].max()) + 1
    again = _take(_train(folder, seed=5, batch_size=3, start_position=resume), 4)
    for x, y in zip(full[2:], again, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_shards_per_host(folder):
    root, anns, _ = folder
    with_faces = {a.name for a in anns['train'] if len(a.valid_boxes)}
    seen = []
    for index in range(2):
        ds = _train(folder, batch_size=1, augment=False, process_index=index, process_count=2)
        seen.append({b['filename'][0].decode() for b in _take(ds, 3 * len(with_faces))})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == with_faces


def test_eval_padding_mask_and_mapping_back(folder):
    root, anns, data_dir = folder
    n_val = len(anns['val'])  # 7: two batches of 4, the last with one padding example.
    batches = list(
        dp.as_numpy_batches(
            dp.make_eval_dataset(
                root,
                batch_size=4,
                image_size=S,
                max_boxes=MAX_BOXES,
                data_dir=data_dir,
                process_index=0,
                process_count=1,
            )
        )
    )
    assert len(batches) == dp.num_eval_batches(n_val, 4, 1) == 2
    mask = np.concatenate([b['_mask'] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(8) < n_val)
    last = batches[-1]
    assert not last['image'][~last['_mask']].any() and not last['box_mask'][~last['_mask']].any()
    by_name = {a.name: a for a in anns['val']}
    names = [f.decode() for b in batches for f in b['filename'][b['_mask']]]
    assert sorted(names) == sorted(by_name)
    for b in batches:
        for i in np.flatnonzero(b['_mask']):
            ann = by_name[b['filename'][i].decode()]
            h, w = b['orig_size'][i]
            sx, sy = b['scale'][i]
            assert max(round(w * sx), round(h * sy)) == S  # Letterbox: the long side fits.
            back = b['boxes'][i][b['box_mask'][i]] / [sx, sy, sx, sy]
            expected = _xyxy(ann)
            if len(expected) > MAX_BOXES:  # The largest MAX_BOXES, in file order.
                area = (expected[:, 2] - expected[:, 0]) * (expected[:, 3] - expected[:, 1])
                expected = expected[np.sort(np.argsort(-area, kind='stable')[:MAX_BOXES])]
            np.testing.assert_allclose(back, expected, atol=1e-2)


def test_eval_shards_line_up_across_hosts(folder):
    root, anns, data_dir = folder
    names, counts = [], []
    for index in range(2):
        ds = dp.make_eval_dataset(
            root,
            batch_size=4,
            image_size=S,
            max_boxes=MAX_BOXES,
            data_dir=data_dir,
            process_index=index,
            process_count=2,
        )
        batches = list(dp.as_numpy_batches(ds))
        counts.append(len(batches))
        names.append({f.decode() for b in batches for f in b['filename'][b['_mask']]})
    assert counts[0] == counts[1] == dp.num_eval_batches(len(anns['val']), 4, 2)
    assert not names[0] & names[1]
    assert names[0] | names[1] == {a.name for a in anns['val']}
