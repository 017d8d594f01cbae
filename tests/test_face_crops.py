"""Tests of the FDF-like face-crop dataset cut from a WIDER-layout folder."""

import json
import os

import cv2
import numpy as np
import pytest

from safefakes_jax.data import face_crops, synthetic, wider


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
