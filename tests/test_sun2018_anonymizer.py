"""Tests for the `sun2018` anonymizer (`anonymizers/sun2018.py`): paste-back into the tight box
only, the 10-px rule, landmarks from the sidecar (and a face without them recorded
`anonymized:no_landmarks`), fallbacks, the missing-generator error and `params()`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.anonymizers import base
from safefakes_jax.anonymizers import sun2018 as sun
from safefakes_jax.models import sun2018, torch_import


@pytest.fixture(scope='module')
def generator_dir(tmp_path_factory):
    resolution, width = 32, 0.0625
    model = sun2018.Generator(width=width, resolution=resolution)
    params = model.init(
        jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), jnp.full((1, 68, 2), jnp.nan)
    )['params']
    path = tmp_path_factory.mktemp('gen') / 'generator'
    info = {'format': 'sun2018', 'width': width, 'resolution': resolution, 'dataset': 'test'}
    torch_import.save_converted(path, jax.device_get(params), info)
    return str(path)


def _face_landmarks(x, y, w, h):
    """A face-shaped 68-point layout inside the box (jaw, brows, nose, eyes, mouth)."""
    t = np.linspace(0, 1, 68)
    return np.c_[x + w * (0.2 + 0.6 * t), y + h * (0.3 + 0.5 * np.sin(np.pi * t))]


def test_paste_changes_only_the_box_and_keeps_the_10px_rule(generator_dir):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), np.uint8)
    boxes = np.array([[10, 20, 40, 44], [150, 100, 30, 30], [80, 80, 8, 12], [60, 10, 0, 5]])
    given = [
        {'keypoints7': np.zeros((7, 3)), 'landmarks68': _face_landmarks(10, 20, 40, 44)},
        None,  # No landmarks: empty maps.
        None,
        None,
    ]
    method = base.create('sun2018', params=generator_dir, keypoints='sidecar', face_batch=2)
    result = method.anonymize(image, boxes, given)
    assert result.records == [
        'anonymized',
        'anonymized:no_landmarks',  # Partly outside: its clipped part.
        'skipped:below_min_face_px',
        'skipped:empty_box',
    ]
    assert base.is_anonymized(result.records[1])
    inside = np.zeros(image.shape[:2], bool)
    inside[20:64, 10:50] = inside[100:120, 150:160] = True
    np.testing.assert_array_equal(result.image[~inside], image[~inside])
    assert (result.image[20:64, 10:50] != image[20:64, 10:50]).mean() > 0.5
    # The landmarks reach the generator.
    without = method.anonymize(image, boxes, [None] * 4)
    assert without.records[0] == 'anonymized:no_landmarks'
    assert not np.array_equal(without.image[20:64, 10:50], result.image[20:64, 10:50])
    # Batched and one image at a time give the same bytes.
    again = method.anonymize_batch(
        [base.Item(image, boxes, given), base.Item(image[:, ::-1].copy(), boxes)]
    )
    np.testing.assert_array_equal(again[0].image, result.image)


def test_landmarks_map_into_the_crop():
    crop = np.array([10, 20, 50, 60])
    lm = np.zeros((68, 2))
    lm[0] = (10, 20)  # The crop's first pixel centre.
    lm[1] = (49, 59)  # Its last.
    out = sun.landmarks_to_crop(lm, crop)
    np.testing.assert_allclose(out[0], (0.5 / 40, 0.5 / 40))
    np.testing.assert_allclose(out[1], (39.5 / 40, 39.5 / 40))
    assert np.isnan(sun.landmarks_to_crop(None, crop)).all()


def test_no_landmark_source_records_every_face(generator_dir):
    method = base.create('sun2018', params=generator_dir, keypoints='none')
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    result = method(image, np.array([[10, 10, 30, 30], [40, 40, 20, 20]]))
    assert result.records == ['anonymized:no_landmarks'] * 2
    with pytest.raises(ValueError, match='68 landmarks'):
        base.create('sun2018', params=generator_dir, keypoints='coco_json')


def test_params_and_a_missing_generator_names_the_train_command(generator_dir, tmp_path):
    method = base.create('sun2018', params=generator_dir, keypoints='none')
    params = method.params()
    assert len(params['weights_sha256']) == 64 and 'weights' not in params
    assert params['resolution'] == 32 and params['generator'] == {'dataset': 'test'}
    assert params['keypoint_source'] == {'name': 'none'}
    missing = base.create('sun2018', params=str(tmp_path / 'nothing'), keypoints='none')
    with pytest.raises(sun.GeneratorNotFoundError, match='configs/sun2018_pipa.py:smoke'):
        missing.params()
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(sun.GeneratorNotFoundError):
        missing(image, np.array([[10, 10, 30, 30]]))
    # No face to generate: the model is not needed.
    assert missing(image, np.array([[10, 10, 5, 5]])).records == ['skipped:below_min_face_px']
    other = tmp_path / 'dp'
    torch_import.save_converted(other, {'w': np.zeros(1)}, {'format': 'deepprivacy'})
    with pytest.raises(ValueError, match='not a Sun2018 generator'):
        base.create('sun2018', params=str(other)).params()


def test_a_failing_generator_blacks_out_and_records_the_fallback(generator_dir):
    method = base.create('sun2018', params=generator_dir, keypoints='none')
    model, params, sha, _ = method._load()

    def broken(*args):
        raise RuntimeError('device lost')

    method._model = (model, params, sha, broken)
    image = np.full((64, 64, 3), 180, np.uint8)
    result = method(image, np.array([[10, 10, 30, 30]]))
    assert result.records == ['fallback:error:RuntimeError']
    assert (result.image[10:40, 10:40] == 0).all() and (result.image[:10] == 180).all()


def test_engine_copy_passes_the_leak_audit(generator_dir, tmp_path):
    """Through the engine with the sidecar's landmarks: no original face pixel survives in an
    anonymizable box, faces under 10 px are skipped, and the landmarks reached the faces."""
    from safefakes_jax.anonymizers import audit
    from safefakes_jax.data import synthetic
    from tests import folders

    src = tmp_path / 'wider'
    synthetic.generate(src, 3, 0, seed=0, workers=1, progress=False, width=320)
    dst = tmp_path / 'wider_sun2018'
    summary = folders.anonymized_copy(
        src, dst, 'jpeg', name='sun2018', params=generator_dir, keypoints='sidecar'
    )
    assert not summary.failed
    result = audit.audit(
        src, dst, options=audit.AuditOptions(identity_min_px=0), workers=1, progress=False
    )
    faces = result.summary['methods']['sun2018']
    assert faces['faces_audited'] > 0 and faces['leaks'] == 0, result.leaks[:3]
    small = [r for r in result.rows if 0 < r.box[2] < 10]
    assert all(r.record == 'skipped:below_min_face_px' for r in small)
    assert any(r.record == 'anonymized' for r in result.rows)  # Faces with landmarks.
    # Without landmarks the manifest says so for every face it replaced.
    from safefakes_jax.data import manifest

    bare = tmp_path / 'wider_sun2018_none'
    folders.anonymized_copy(
        src, bare, 'jpeg', name='sun2018', params=generator_dir, keypoints='none'
    )
    records = [r for e in manifest.read_entries(str(bare / manifest.MANIFEST)) for r in e['faces']]
    assert 'anonymized:no_landmarks' in records
    assert all(r == 'anonymized:no_landmarks' or r.startswith('skipped:') for r in records)
