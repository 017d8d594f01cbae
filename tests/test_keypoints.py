"""Keypoint sources (sidecar, dlib68, coco_json, none) and the crop coordinates."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from safefakes_jax.anonymizers import keypoints as K
from safefakes_jax.anonymizers import wider_copy
from safefakes_jax.data import landmarks_sidecar, synthetic, wider


def test_names_and_build_errors():
    assert K.names() == ['coco_json', 'dlib68', 'none', 'sidecar']
    with pytest.raises(KeyError, match='known: coco_json, dlib68, none, sidecar'):
        K.build('mask_rcnn')
    with pytest.raises(ValueError, match='options: box_fallback'):
        K.build('dlib68', threshold=1)
    with pytest.raises(ValueError, match='needs a "path"'):
        K.build('coco_json')
    assert K.build('sidecar').uses_sidecar and not K.build('none').uses_sidecar


def test_import_is_cheap():
    code = 'import sys, safefakes_jax.anonymizers.keypoints; assert "dlib" not in sys.modules'
    subprocess.run([sys.executable, '-c', code], check=True)


def test_none_source():
    out = K.build('none').locate(None, [[0, 0, 10, 10], [5, 5, 3, 3]])
    assert [(r.points, r.reason) for r in out] == [(None, 'disabled')] * 2
    with pytest.raises(ValueError, match=r'\[N, 4\]'):
        K.build('none').locate(None, [1, 2, 3])


# --------------------------------------------------------------------------- sidecar


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('syn')
    synthetic.generate(root, 3, 0, seed=0, workers=1, progress=False, width=320)
    return str(root)


def test_sidecar_from_what_the_engine_delivers(synthetic_root):
    txt, _ = wider.require_split(synthetic_root, 'train')
    annotations = wider.read_bbx_gt(txt, allow_negative=True)
    given = wider_copy.load_keypoints(synthetic_root, 'train', annotations)  # As the engine.
    file = landmarks_sidecar.path(synthetic_root, 'train')
    records = {r['image']: r['faces'] for _, r in landmarks_sidecar.read(file)}
    source = K.build('sidecar')
    n = 0
    for ann, kp in zip(annotations, given, strict=True):
        out = source.locate(None, ann.boxes, image_name=ann.name, given=kp)
        assert len(out) == len(ann.boxes)
        for face, result in zip(records[ann.name], out, strict=True):
            assert result.reason is None and result.points.dtype == np.float32
            np.testing.assert_allclose(result.points, face['keypoints7'], atol=1e-4)
            n += 1
    assert n > 0
    # An image the sidecar does not list, and a face row without keypoints.
    missing = wider.ImageAnnotation(
        '0--x/missing.jpg', np.array([[1, 2, 30, 30]]), np.zeros((1, 6))
    )
    (kp,) = wider_copy.load_keypoints(synthetic_root, 'train', [missing])
    assert kp is None
    assert source.locate(None, missing.boxes, given=kp)[0].reason == 'not_in_sidecar'
    out = source.locate(None, [[0, 0, 9, 9]] * 2, given=[None, {'landmarks68': np.zeros((68, 2))}])
    assert [(r.points, r.reason) for r in out] == [(None, 'not_in_sidecar')] * 2
    with pytest.raises(ValueError, match='2 keypoint entries for 1 boxes'):
        source.locate(None, [[0, 0, 9, 9]], given=[None, None])
    with pytest.raises(ValueError, match='a.jpg face 0: keypoints7 must be finite'):
        source.locate(None, [[0, 0, 9, 9]], image_name='a.jpg', given=[{'keypoints7': [[1, 2]]}])


# --------------------------------------------------------------------------- dlib68


def test_landmarks68_mapping():
    lm = np.arange(136, dtype=np.float64).reshape(68, 2)
    p = K.landmarks68_to_keypoints7(lm)
    np.testing.assert_allclose(p[0, :2], lm[30])
    np.testing.assert_allclose(p[1, :2], lm[42:48].mean(0))  # Person's left = image right.
    np.testing.assert_allclose(p[2, :2], lm[36:42].mean(0))
    np.testing.assert_allclose(p[3, :2], lm[16])
    np.testing.assert_allclose(p[4, :2], lm[0])
    np.testing.assert_array_equal(p[:5, 2], 1)
    np.testing.assert_array_equal(p[5:], 0)
    lm[0] = (-3, 5)  # The right ear leaves the image: absent.
    p = K.landmarks68_to_keypoints7(lm, height=200, width=200)
    np.testing.assert_array_equal(p[4], 0)
    assert p[3, 2] == 1


def test_dlib68_on_the_astronaut():
    pytest.importorskip('dlib')
    skimage_data = pytest.importorskip('skimage.data')
    image = skimage_data.astronaut()
    x, y, w, h = box = (175, 76, 91, 91)
    (result,) = K.build('dlib68').locate(image, [box])
    assert result.reason is None and result.fit == 'detection'
    p = result.points
    assert p.shape == (7, 3) and p.dtype == np.float32
    np.testing.assert_array_equal(p[:5, 2], 1)
    np.testing.assert_array_equal(p[5:], 0)  # Shoulders absent.
    nose, left_eye, right_eye = p[0], p[1], p[2]
    assert x <= nose[0] <= x + w and y <= nose[1] <= y + h
    assert left_eye[0] > right_eye[0]  # The person's left eye is on the image right.
    assert left_eye[1] < nose[1] and right_eye[1] < nose[1]
    assert p[3, 0] > left_eye[0] and p[4, 0] < right_eye[0]  # Ears outside the eyes.
    # The same face at a quarter of the size (a 22 px box) is still found: upsampled.
    small = image[::4, ::4].copy()
    (r,) = K.build('dlib68').locate(small, [[x // 4, y // 4, w // 4, h // 4]])
    assert r.fit == 'detection'
    np.testing.assert_allclose(r.points[:3, :2] * 4, p[:3, :2], atol=6)


def test_dlib68_without_a_face():
    pytest.importorskip('dlib')
    grey = np.full((200, 240, 3), 128, np.uint8)
    box = [60, 50, 70, 70]
    (r,) = K.build('dlib68').locate(grey, [box])  # Default: fit on the box itself.
    assert r.reason is None and r.fit == 'box'
    assert np.all(r.points[:3, 0] >= 60) and np.all(r.points[:3, 0] <= 130)
    (r,) = K.build('dlib68', box_fallback=False).locate(grey, [box])
    assert (r.points, r.reason) == (None, 'no_face_detected')
    out = K.build('dlib68').locate(grey, [[0, 0, 0, 5], [300, 0, 9, 9]])
    assert [o.reason for o in out] == ['empty_box', 'outside_image']
    with pytest.raises(ValueError, match='needs the image'):
        K.build('dlib68').locate(None, [box])
    assert len(K.build('dlib68').params()['model_sha256']) == 64


# --------------------------------------------------------------------------- coco_json


def person(nose, left_eye, right_eye, v=2):
    """A COCO 17-point keypoint list with the nose and eyes set, the rest absent."""
    kp = [0] * 51
    for i, (px, py) in enumerate((nose, left_eye, right_eye)):
        kp[3 * i : 3 * i + 3] = [px, py, v]
    kp[9:12] = [nose[0] + 20, nose[1], 1]  # Left ear, v=1 (labelled, occluded): present.
    return kp


def write_json(path, images, people):
    data = {
        'images': [{'file_name': n, 'id': i} for i, n in enumerate(images)],
        'annotations': [{'image_id': i, 'keypoints': kp} for i, kp in people],
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_coco_json_matching(tmp_path):
    a = person((50, 50), (60, 40), (40, 40))
    b = person((150, 50), (160, 40), (140, 40))
    hidden_eye = person((250, 50), (260, 40), (240, 40), v=0)
    file = write_json(tmp_path / 'kp.json', ['0--x/a.jpg', '0--x/b.jpg'], [(0, a), (0, b)])
    source = K.build('coco_json', path=file)
    # Provenance is the file's bytes, not where it lies.
    assert source.params() == {'name': 'coco_json', 'sha256': K._sha256(file)}
    # One box per person, in order; a box over nobody is no_match.
    out = source.locate(
        None, [[30, 30, 40, 40], [130, 30, 40, 40], [400, 0, 50, 50]], image_name='0--x/a.jpg'
    )
    assert [r.reason for r in out] == [None, None, 'no_match']
    np.testing.assert_array_equal(
        out[0].points[:4], [[50, 50, 1], [60, 40, 1], [40, 40, 1], [70, 50, 1]]
    )
    np.testing.assert_array_equal(out[0].points[4:], 0)
    assert out[1].points[0, 0] == 150
    # Edges count as inside ([x, x + w]); the box's own order decides (DeepPrivacy's greedy
    # first-unmatched person): a wide box first takes person a, a box over a then gets none.
    out = source.locate(None, [[40, 40, 120, 10], [40, 40, 20, 10]], image_name='0--x/a.jpg')
    assert [r.reason for r in out] == [None, 'no_match']
    assert out[0].points[0, 0] == 50
    out = source.locate(None, [[130, 30, 40, 40], [0, 0, 200, 200]], image_name='0--x/a.jpg')
    assert [r.points[0, 0] for r in out] == [150, 50]
    # Nose and eyes must be present (v > 0).
    file2 = write_json(tmp_path / 'hidden.json', ['0--x/a.jpg'], [(0, hidden_eye)])
    (r,) = K.build('coco_json', path=file2).locate(
        None, [[200, 0, 100, 100]], image_name='0--x/a.jpg'
    )
    assert r.reason == 'no_match'
    assert source.locate(None, [[0, 0, 9, 9]], image_name='0--x/b.jpg')[0].reason == 'no_match'
    assert source.locate(None, [[0, 0, 9, 9]], image_name='0--x/c.jpg')[0].reason == 'not_in_json'
    with pytest.raises(ValueError, match='needs the image name'):
        source.locate(None, [[0, 0, 9, 9]])


ONE_IMAGE = '{"images": [{"file_name": "a", "id": 1}], "annotations": %s}'


@pytest.mark.parametrize(
    'text, message',
    [
        ('{"images": [', 'invalid JSON'),
        (b'\xff\xfe', 'utf-8'),
        ('[]', 'expected an object'),
        ('{"images": [{"file_name": "a"}], "annotations": []}', r'images\[0\]: needs an integer'),
        ('{"images": [{"file_name": "a", "id": true}], "annotations": []}', 'integer "id"'),
        ('{"images": [{"file_name": 3, "id": 1}], "annotations": []}', 'string "file_name"'),
        (
            '{"images": [{"file_name": "a", "id": 1}, {"file_name": "a", "id": 2}], '
            '"annotations": []}',
            'twice',
        ),
        ('{"images": [{"file_name": "a", "id": 1}], "annotations": {}}', 'lists "images"'),
        (ONE_IMAGE % '[{"image_id": 2, "keypoints": []}]', r'annotations\[0\]: "image_id"'),
        (ONE_IMAGE % '[{"image_id": [1]}]', r'annotations\[0\]: "image_id"'),
        (ONE_IMAGE % '[3]', r'annotations\[0\]: "image_id"'),
        (ONE_IMAGE % '[{"image_id": 1, "keypoints": [0, 0, 0]}]', '51 finite numbers'),
    ],
)
def test_coco_json_malformed(tmp_path, text, message):
    file = tmp_path / 'bad.json'
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=message) as e:
        K.build('coco_json', path=str(file))
    assert str(file) in str(e.value)


@pytest.mark.parametrize('value', ['NaN', 'Infinity', '-Infinity', '1e999', '"1"', 'true', 'null'])
def test_coco_json_refuses_non_finite_and_non_numbers(tmp_path, value):
    good = json.dumps(person((5, 5), (6, 4), (4, 4)))
    bad = good.replace('5', value, 1)  # The nose's x.
    file = tmp_path / 'nan.json'
    file.write_text(
        '{"images": [{"file_name": "a", "id": 1}], "annotations": ['
        f'{{"image_id": 1, "keypoints": {good}}}, {{"image_id": 1, "keypoints": {bad}}}]}}'
    )
    with pytest.raises(ValueError) as e:
        K.build('coco_json', path=str(file))
    assert str(file) in str(e.value)
    if value in ('NaN', 'Infinity', '-Infinity'):
        assert f'non-finite number {value}' in str(e.value)
    else:
        assert 'annotations[1]: "keypoints" must be 51 finite numbers' in str(e.value)


def test_coco_json_visibility_must_be_coco(tmp_path):
    file = write_json(tmp_path / 'v.json', ['a'], [(0, person((5, 5), (6, 4), (4, 4), v=3))])
    with pytest.raises(ValueError, match=r'annotations\[0\]: visibility must be 0, 1 or 2'):
        K.build('coco_json', path=file)


# --------------------------------------------------------------------------- to_crop


def test_to_crop():
    crop = [10, 20, 110, 120]  # A 100 px square at x 10, y 20.
    points = np.zeros((7, 3), np.float32)
    points[0] = (9.5, 19.5, 1)  # The crop's top-left corner (pixel edges, not centres).
    points[1] = (10, 20, 1)  # The centre of the crop's first pixel.
    points[2] = (109.5, 69.5, 1)  # The right edge, half way down.
    points[3] = (60, 70, 0)  # Absent, whatever its coordinates.
    for size in (128, 64):  # The normalised values do not depend on the output size.
        u = K.to_crop(points, crop, size)
        assert u.shape == (7, 2) and u.dtype == np.float32
        np.testing.assert_allclose(u[0], [0, 0], atol=1e-6)
        np.testing.assert_allclose(u[1], [0.005, 0.005], atol=1e-6)
        np.testing.assert_allclose(u[2], [1, 0.5], atol=1e-6)
        assert np.all(np.isnan(u[3:]))
    # DeepPrivacy's cell floor(u * r) holds the point at every resolution.
    assert all(math.floor(K.to_crop(points, crop, 128)[1, 0] * r) == 0 for r in (4, 8, 128))
    assert np.all(np.isnan(K.to_crop(None, crop, 128)))
    with pytest.raises(ValueError, match='square'):
        K.to_crop(points, [0, 0, 10, 20], 128)
    with pytest.raises(ValueError, match=r'\[7, 3\]'):
        K.to_crop(points[:5], crop, 128)


def test_crop_pixels_to_unit_batched():
    kp = np.zeros((2, 7, 3))
    kp[1, 0] = (127, 0, 1)  # Last column, first row of a 128 crop.
    u = K.crop_pixels_to_unit(kp, 128)
    assert u.shape == (2, 7, 2) and np.all(np.isnan(u[0]))
    np.testing.assert_allclose(u[1, 0], [127.5 / 128, 0.5 / 128])
