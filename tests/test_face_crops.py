"""Tests of the FDF-like face-crop dataset cut from a WIDER-layout folder."""

import json
import os
import re
import sys

import cv2
import numpy as np
import pytest

from safefakes_jax.data import face_crops, fdf, images, synthetic, wider


def test_crop_box_squares_then_expands():
    # w < h: grow x by (50 - 30) // 2 = 10 on the left; then 0.35 * 50 -> 17 on every side.
    np.testing.assert_array_equal(face_crops.crop_box([10, 20, 30, 50]), [-17, 3, 67, 87])
    # w > h: grow y instead.
    np.testing.assert_array_equal(
        face_crops.crop_box([100, 40, 40, 21]), [100 - 14, 40 - 9 - 14, 140 + 14, 40 - 9 + 40 + 14]
    )


def test_cut_pads_with_zeros_and_resizes():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = face_crops.cut(img, [-5, -2, 15, 18], 20)  # Same size: no resampling.
    assert out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(out[:, :5], 0)
    np.testing.assert_array_equal(out[2:, 5:], img[:18, :15])
    assert face_crops.cut(img, [-5, -2, 15, 18], 8).shape == (8, 8, 3)
    assert face_crops.cut(img, [-5, -2, 15, 18], 64).shape == (64, 64, 3)


def test_point_transform_matches_resampled_pixels():
    img = np.zeros((100, 100, 3), np.uint8)
    img[37, 61] = 255  # A point at pixel centre (61, 37).
    crop = [40, 20, 80, 60]  # 40 px -> 120 px: scale 3.
    out = face_crops.cut(img, crop, 120)[..., 0].astype(float)
    p = face_crops.points_to_crop([[61.0, 37.0]], crop, 120)[0]
    yy, xx = np.mgrid[0:120, 0:120]
    centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, p, atol=0.05)
    np.testing.assert_allclose(
        face_crops.box_to_crop([50, 30, 60, 45], crop, 120), [30, 30, 60, 75]
    )


@pytest.fixture
def handmade(tmp_path):
    """A one-image WIDER-layout folder with a white face box on black and a sidecar."""
    img = np.zeros((120, 160, 3), np.uint8)
    x, y, w, h = 30, 40, 20, 30
    img[y : y + h, x : x + w] = (0, 0, 255)  # Red in BGR.
    name = '0--Parade/0_Parade_marchingband_0_1.jpg'
    path = tmp_path / 'WIDER_train' / 'images' / name
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    wider.write_bbx_gt(
        tmp_path / 'wider_face_split' / 'wider_face_train_bbx_gt.txt',
        [wider.ImageAnnotation(name, [[x, y, w, h], [100, 10, 5, 6]], np.zeros((2, 6)))],
    )
    lm = np.stack([np.linspace(x, x + w - 1, 68), np.linspace(y, y + h - 1, 68)], 1)
    kp = [[40, 55, 1], [45, 50, 1], [35, 50, 1], [0, 0, 0], [0, 0, 0], [150, 100, 1], [0, 0, 0]]
    small = {
        'box': [100, 10, 5, 6],
        'landmarks68': [[101, 12]] * 68,
        'keypoints7': [[0, 0, 0]] * 7,
        'identity': 8,
        'yaw': 0,
        'roll': 0,
        'occlusion_fraction': 0,
    }
    rec = {
        'image': name,
        'width': 160,
        'height': 120,
        'faces': [
            {
                'box': [x, y, w, h],
                'landmarks68': lm.tolist(),
                'keypoints7': kp,
                'identity': 7,
                'yaw': 0.0,
                'roll': 0.0,
                'occlusion_fraction': 0.0,
            },
            small,
        ],
    }
    (tmp_path / 'landmarks').mkdir()
    (tmp_path / 'landmarks' / 'train.jsonl').write_text(json.dumps(rec) + '\n')
    return tmp_path, (x, y, w, h), lm, np.asarray(kp, float)


def test_handmade_crop(handmade, tmp_path):
    root, (x, y, w, h), lm, kp = handmade
    crops = face_crops.make_face_crops(root, 'train', size=64, out_dir=tmp_path / 'out')
    assert len(crops) == 1 and crops.skipped == {'small': 1, 'invalid': 0}
    c = face_crops.crop_box([x, y, w, h])  # [15, 29, 65, 79] + 10 px -> side 50.
    np.testing.assert_array_equal(c, [25 - 10, 40 - 10, 55 + 10, 70 + 10])
    np.testing.assert_array_equal(crops.crop_boxes[0], c)
    s = 64 / 50
    np.testing.assert_allclose(
        crops.boxes[0], [(30 - 15) * s, (40 - 30) * s, (50 - 15) * s, (70 - 30) * s], rtol=1e-6
    )
    np.testing.assert_allclose(crops.landmarks68[0], (lm + 0.5 - [15, 30]) * s - 0.5, atol=1e-4)
    expect_kp = np.where(kp[:, 2:] > 0, (kp[:, :2] + 0.5 - [15, 30]) * s - 0.5, 0)
    np.testing.assert_allclose(crops.keypoints7[0, :, :2], expect_kp, atol=1e-4)
    np.testing.assert_array_equal(crops.keypoints7[0, :, 2], kp[:, 2])
    # RGB: the face box is red, outside it black.
    bx = crops.boxes[0].round().astype(int)
    inner = crops.images[0, bx[1] + 2 : bx[3] - 2, bx[0] + 2 : bx[2] - 2]
    assert inner[..., 0].min() > 200 and inner[..., 2].max() < 60
    assert crops.images[0, :5, :5].max() < 30
    assert crops.identity.tolist() == [7] and crops.face_index.tolist() == [0]
    assert crops.source_image.tolist() == ['0--Parade/0_Parade_marchingband_0_1.jpg']
    loaded = face_crops.FaceCrops.load(tmp_path / 'out' / 'train_64.npz')
    np.testing.assert_array_equal(loaded.images, crops.images)
    assert loaded.skipped == crops.skipped
    assert not [f for f in os.listdir(tmp_path / 'out') if f.endswith('.tmp')]


def test_exif_rotated_jpeg_crop_and_box_agree(handmade):
    """The boxes refer to the stored pixel grid: an EXIF orientation tag must not rotate it."""
    import PIL.Image

    root, (x, y, w, h), _, _ = handmade
    path = root / 'WIDER_train/images/0--Parade/0_Parade_marchingband_0_1.jpg'
    with PIL.Image.open(path) as im:
        exif = PIL.Image.Exif()
        exif[0x0112] = 8  # Rotate 90 CCW when displayed.
        im.save(path, 'JPEG', quality=100, exif=exif.tobytes())
    crops = face_crops.make_face_crops(root, 'train', size=64)
    bx = crops.boxes[0].round().astype(int)
    inner = crops.images[0, bx[1] + 2 : bx[3] - 2, bx[0] + 2 : bx[2] - 2]
    assert inner[..., 0].min() > 200 and inner[..., 2].max() < 60  # Still the red face.
    assert crops.images[0, :5, :5].max() < 30


def test_missing_sidecar_is_a_clear_error(handmade):
    root = handmade[0]
    os.remove(root / 'landmarks' / 'train.jsonl')
    with pytest.raises(FileNotFoundError, match='landmarks sidecar'):
        face_crops.make_face_crops(root, 'train')


def test_crops_of_synthetic_set(tmp_path):
    synthetic.generate(tmp_path, 3, 2, seed=0, workers=1, progress=False)
    for split in ('train', 'val'):
        crops = face_crops.make_face_crops(tmp_path, split, size=32, min_face_px=10)
        anns = wider.read_bbx_gt(wider.split_paths(tmp_path, split)[0])
        n_faces = sum(len(a.boxes) for a in anns)
        assert len(crops) + sum(crops.skipped.values()) == n_faces
        n = len(crops)
        assert n > 0
        assert crops.images.shape == (n, 32, 32, 3) and crops.images.dtype == np.uint8
        assert crops.boxes.shape == (n, 4) and crops.keypoints7.shape == (n, 7, 3)
        assert crops.landmarks68.shape == (n, 68, 2) and crops.identity.dtype == np.int32
        # The face is centred; its long side spans side / (side + 2 int(0.35 side)) of the crop.
        centre = (crops.boxes[:, :2] + crops.boxes[:, 2:]) / 2
        np.testing.assert_allclose(centre, 16, atol=1.5)
        by_name = {r['image']: r for r in face_crops.read_sidecar(tmp_path, split)}
        side = np.array(
            [
                max(by_name[str(im)]['faces'][j]['box'][2:])
                for im, j in zip(crops.source_image, crops.face_index, strict=True)
            ]
        )
        long_side = np.max(crops.boxes[:, 2:] - crops.boxes[:, :2], 1)
        np.testing.assert_allclose(
            long_side, 32 * side / (side + 2 * (side * 35 // 100)), rtol=1e-5
        )
        # The nose keypoint is landmark 30 and lies inside the face box.
        np.testing.assert_allclose(crops.keypoints7[:, 0, :2], crops.landmarks68[:, 30], atol=0.05)
        assert np.all(crops.keypoints7[:, 0, :2] >= crops.boxes[:, :2] - 1)
        assert np.all(crops.keypoints7[:, 0, :2] <= crops.boxes[:, 2:] + 1)


# ------------------------------------------------------------------ FDF reader and subsets


def write_fdf(root, split='train', n=4, sizes=(16,), boxes=None, landmarks=None):
    """A tiny FDF folder in DeepPrivacy's layout: image i is filled with value 10 * i + 1."""
    d = root / split
    for size in sizes:
        (d / 'images' / str(size)).mkdir(parents=True)
        for i in range(n):
            img = np.full((size, size, 3), 10 * i + 1, np.uint8)
            img[0, 0] = (255, 0, 0)  # Top-left red: RGB order and no flip.
            (d / 'images' / str(size) / f'{i}.png').write_bytes(images.encode(img, 'png'))
        (d / 'bounding_box').mkdir(exist_ok=True)
        b = np.tile([2, 3, size - 2, size - 1], (n, 1)) if boxes is None else boxes
        np.save(d / 'bounding_box' / f'{size}.npy', np.asarray(b, np.int64))
    lm = (
        np.tile(np.linspace(0.1, 0.7, 14).reshape(7, 2), (n, 1, 1))
        if landmarks is None
        else landmarks
    )
    np.save(d / 'landmarks.npy', np.asarray(lm, np.float32))
    return d


def test_fdf_hand_case(tmp_path):
    from safefakes_jax.data import face_crop_pipeline  # Lazy: it loads TensorFlow.

    lm = np.tile(np.linspace(0.1, 0.7, 14).reshape(7, 2), (3, 1, 1))
    lm[0, 0] = (np.nan, 0.5)  # Missing nose.
    lm[1, 5] = (1.2, 0.5)  # Shoulder outside the crop.
    lm[2, 6] = (1.0, 0.0)  # On the border: visible.
    boxes = [[2, 3, 14, 15], [0, 0, 16, 16], [5, 5, 6, 6]]
    write_fdf(tmp_path, n=3, boxes=boxes, landmarks=lm)
    crops = fdf.read_fdf(tmp_path, 'train', size=16)
    assert len(crops) == 3 and crops.images.shape == (3, 16, 16, 3)
    for i in range(3):
        assert (crops.images[i, 1:, 1:] == 10 * i + 1).all()
        assert crops.images[i, 0, 0].tolist() == [255, 0, 0]
    assert crops.boxes.dtype == np.float32
    np.testing.assert_array_equal(crops.boxes, boxes)
    vis = crops.keypoints7[..., 2]
    assert vis.dtype == np.float32 and vis.sum() == 3 * 7 - 2
    assert vis[0, 0] == 0 and vis[1, 5] == 0 and vis[2, 6] == 1
    np.testing.assert_array_equal(crops.keypoints7[0, 0], 0)
    np.testing.assert_array_equal(crops.keypoints7[1, 5], 0)
    shown = vis > 0
    np.testing.assert_allclose(crops.keypoints7[..., :2][shown], lm[shown] * 16 - 0.5, atol=1e-5)
    # The pipeline's normalisation gives the stored [0, 1] values back.
    back = face_crop_pipeline.normalised_keypoints(crops.keypoints7, 16)
    np.testing.assert_allclose(back[shown], lm[shown], atol=1e-6)
    assert np.isnan(back[~shown]).all()
    assert crops.identity.tolist() == [-1] * 3 and crops.face_index.tolist() == [0, 1, 2]
    assert crops.source_image.tolist() == [f'train/images/16/{i}.png' for i in range(3)]
    assert np.isnan(crops.landmarks68).all()


def test_fdf_flat_landmarks_and_torch_refusal(tmp_path, monkeypatch):
    d = write_fdf(tmp_path, n=2)
    flat = np.load(d / 'landmarks.npy').reshape(2, 14)
    ref = fdf.read_fdf(tmp_path, 'train', 16)
    np.save(d / 'landmarks.npy', flat)  # Flat x0 y0 x1 y1 .. rows (DeepPrivacy reshapes).
    np.testing.assert_array_equal(fdf.read_fdf(tmp_path, 'train', 16).keypoints7, ref.keypoints7)
    os.rename(d / 'bounding_box/16.npy', d / 'bounding_box/16.torch')
    monkeypatch.setitem(sys.modules, 'torch', None)  # As if torch were not installed.
    with pytest.raises(ImportError, match=r'16\.torch.*needs torch'):
        fdf.read_fdf(tmp_path, 'train', 16)


def test_fdf_limit_is_the_same_seeded_subset_for_every_size(tmp_path):
    write_fdf(tmp_path, n=12, sizes=(8, 16))
    a = fdf.read_fdf(tmp_path, 'train', 16, limit=5, seed=3)
    b = fdf.read_fdf(tmp_path, 'train', 8, limit=5, seed=3)
    np.testing.assert_array_equal(a.face_index, b.face_index)
    np.testing.assert_array_equal(a.face_index, face_crops.subset_indices(12, 5, 3))
    assert (a.images[:, 1, 1, 0] == 10 * a.face_index + 1).all()
    assert sorted(a.face_index.tolist()) == a.face_index.tolist()
    assert fdf.read_fdf(tmp_path, 'train', 16, limit=5, seed=4).face_index.tolist() != (
        a.face_index.tolist()
    )
    with pytest.raises(ValueError, match='subset of 13 out of 12'):
        fdf.read_fdf(tmp_path, 'train', 16, limit=13)


def _corrupt(d, what):
    lm = np.load(d / 'landmarks.npy')
    boxes = np.load(d / 'bounding_box/16.npy')
    if what == 'landmarks length':
        np.save(d / 'landmarks.npy', lm[:-1])
    elif what == 'landmarks shape':
        np.save(d / 'landmarks.npy', lm[:, :5])
    elif what == 'inf landmark':
        lm[2, 3, 0] = np.inf
        np.save(d / 'landmarks.npy', lm)
    elif what == 'pickled landmarks':
        np.save(d / 'landmarks.npy', np.array([{'x': 1}] * len(lm), dtype=object))
    elif what == 'boxes length':
        np.save(d / 'bounding_box/16.npy', boxes[:-1])
    elif what in ('box outside', 'empty box', 'nan box'):
        boxes = boxes.astype(np.float64)
        boxes[2] = {'box outside': [2, 3, 17, 10], 'empty box': [5, 5, 5, 9]}.get(
            what, [np.nan, 1, 2, 3]
        )
        np.save(d / 'bounding_box/16.npy', boxes)
    elif what == 'missing landmarks':
        os.remove(d / 'landmarks.npy')
    elif what == 'missing boxes':
        os.remove(d / 'bounding_box/16.npy')
    elif what == 'missing image':
        os.remove(d / 'images/16/1.png')
    elif what == 'bad name':
        (d / 'images/16/face.png').write_bytes(b'')
    elif what == 'corrupt image':
        (d / 'images/16/2.png').write_bytes(b'\x89PNG not really')
    elif what == 'wrong image size':
        (d / 'images/16/2.png').write_bytes(images.encode(np.zeros((8, 16, 3), np.uint8), 'png'))


@pytest.mark.parametrize(
    'what, file, message',
    [
        ('landmarks length', 'landmarks.npy', r'\(4, 7, 2\).*got \(3, 7, 2\)'),
        ('landmarks shape', 'landmarks.npy', 'shape'),
        ('inf landmark', 'landmarks.npy', 'row 2: infinite'),
        ('pickled landmarks', 'landmarks.npy', 'pickle'),
        ('boxes length', '16.npy', r'\(4, 4\)'),
        ('box outside', '16.npy', 'row 2.*outside'),
        ('empty box', '16.npy', 'row 2.*empty'),
        ('nan box', '16.npy', 'row 2.*not finite'),
        ('missing landmarks', 'landmarks.npy', 'not found'),
        ('missing boxes', '16.npy', 'not found'),
        ('missing image', '1.png', 'missing'),
        ('bad name', 'face.png', 'integer'),
        ('corrupt image', '2.png', 'corrupt'),
        ('wrong image size', '2.png', '16 x 16'),
    ],
)
def test_fdf_bad_input_is_a_clear_error_naming_the_file(tmp_path, what, file, message):
    d = write_fdf(tmp_path, n=4)
    _corrupt(d, what)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        fdf.read_fdf(tmp_path, 'train', 16)
    assert file in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)


def test_fdf_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='split folder'):
        fdf.read_fdf(tmp_path, 'train')
    write_fdf(tmp_path, n=2)
    with pytest.raises(FileNotFoundError, match='size 32'):
        fdf.read_fdf(tmp_path, 'train', 32)


def test_subset_is_seeded_nested_and_aligned():
    crops = face_crops.FaceCrops(
        images=np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(3, 3),
        boxes=np.arange(20, dtype=np.float32)[:, None].repeat(4, 1),
        keypoints7=np.zeros((20, 7, 3), np.float32),
        landmarks68=np.zeros((20, 68, 2), np.float32),
        identity=np.arange(20, dtype=np.int32) + 100,
        source_image=np.array([f'{i}.jpg' for i in range(20)]),
        face_index=np.arange(20, dtype=np.int32),
        crop_boxes=np.zeros((20, 4), np.int32),
        skipped={'small': 2},
    )
    a = face_crops.subset(crops, 8, seed=1)
    assert len(a) == 8 and a.skipped == {'small': 2}
    rows = a.face_index
    assert (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(a.identity, rows + 100)
    np.testing.assert_array_equal(a.images[:, 0, 0, 0], rows)
    np.testing.assert_array_equal(a.source_image, [f'{i}.jpg' for i in rows])
    np.testing.assert_array_equal(face_crops.subset(crops, 8, seed=1).face_index, rows)
    assert face_crops.subset(crops, 8, seed=2).face_index.tolist() != rows.tolist()
    assert set(face_crops.subset(crops, 5, seed=1).face_index) < set(rows)  # Nested.
    assert len(face_crops.subset(crops, 20, seed=1)) == 20
    first = face_crops.subset(crops, 6, seed=5, shuffle=False)
    np.testing.assert_array_equal(first.face_index, range(6))
    for shuffle in (True, False):
        with pytest.raises(ValueError, match='subset'):
            face_crops.subset(crops, 21, shuffle=shuffle)


def test_load_split_reads_npz_and_fdf_and_names_the_missing_file(tmp_path):
    write_fdf(tmp_path, n=6, sizes=(16,))
    a = face_crops.load_split('fdf', tmp_path, 'train', limit=4, size=16)
    assert len(a) == 4
    a.save(tmp_path / 'crops.npz')
    b = face_crops.load_split('npz', tmp_path / 'crops.npz', 'train', limit=2)
    np.testing.assert_array_equal(b.face_index, a.face_index[face_crops.subset_indices(4, 2, 0)])
    with pytest.raises(FileNotFoundError, match='make_synthetic_wider.py'):
        face_crops.load_split('npz', tmp_path / 'none.npz', 'val')
    with pytest.raises(ValueError, match='source must be one of'):
        face_crops.load_split('tfds', tmp_path, 'train')


def test_cut_at_its_own_size_pads_with_zeros_outside_the_image():
    image = np.full((10, 10, 3), 200, np.uint8)
    out = face_crops.cut(image, np.array([-2, -2, 4, 4]))
    assert out.shape == (6, 6, 3)
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all() and (out[2:, 2:] == 200).all()
