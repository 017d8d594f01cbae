"""Tests for the `ciagan` anonymizer (`anonymizers/ciagan.py`): paste-back into the mask
polygon only, the fail-closed fallbacks, the 10-px rule, the target identity ('random' seeded,
'next'), the missing-generator error, and a set anonymized through the engine."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safefakes_jax.anonymizers import base
from safefakes_jax.anonymizers import ciagan as cg  # Registers 'ciagan'.
from safefakes_jax.data import ciagan_faces, images, landmarks_sidecar, manifest, synthetic
from safefakes_jax.models import ciagan, torch_import
from tests import folders

R, CLASSES = 32, 8


def _generator_folder(path, seed=0):
    """A tiny generator's variables, saved as a training export would be.

    `gen.init` compiles for 15-30 s on these CPUs; variables of its shapes drawn here with
    numpy (kernels ~ N(0, 1 / fan_in), unit spectral-norm vectors) make an equally valid,
    deterministic network in well under a second.
    """
    gen = ciagan.Generator(num_classes=CLASSES, resolution=R, width=0.125)
    x = jnp.zeros((1, R, R, 3))
    shapes = jax.eval_shape(gen.init, jax.random.key(seed), x, x, jnp.zeros((1, CLASSES)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ('u', 'v'):
            v = rng.standard_normal(leaf.shape)
            return (v / np.linalg.norm(v)).astype(np.float32)
        if name == 'scale':
            return np.ones(leaf.shape, np.float32)
        if name == 'bias':
            return np.full(leaf.shape, 0.01, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    info = {'format': 'ciagan', 'num_classes': CLASSES, 'resolution': R, 'width': 0.125}
    torch_import.save_converted(path, variables, info)
    return str(path)


@pytest.fixture(scope='module')
def generator_dir(tmp_path_factory):
    return _generator_folder(tmp_path_factory.mktemp('gen') / 'generator')


@pytest.fixture(scope='module')
def wider_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('wider')
    synthetic.generate(root, 3, 0, seed=0, workers=1, progress=False, width=480)
    return root


def _image_with_faces(root, min_w=30):
    """An image of the set with its boxes and sidecar keypoints, the largest faces first."""
    for _, rec in landmarks_sidecar.read(landmarks_sidecar.path(root, 'train')):
        faces = sorted(rec['faces'], key=lambda f: -f['box'][2])
        big = [f for f in faces if f['box'][2] >= min_w and abs(f['yaw']) < 30]
        if big:
            image = images.read(root / 'WIDER_train' / 'images' / rec['image'])
            kps = [
                {k: np.asarray(f[k], np.float32) for k in ('keypoints7', 'landmarks68')}
                | {'identity': f['identity']}
                for f in big
            ]
            return image, np.array([f['box'] for f in big]), kps
    raise AssertionError('no large frontal face in the set')


def test_paste_changes_only_the_mask_region(generator_dir, wider_root):
    image, boxes, kps = _image_with_faces(wider_root)
    method = base.create('ciagan', params=generator_dir, face_batch=2)
    result = method(image, boxes[:1], kps[:1], np.random.default_rng(0))
    assert result.records == ['anonymized']
    y0, x0, inside = cg._polygon_region(kps[0]['landmarks68'], *image.shape[:2])
    mask = np.zeros(image.shape[:2], bool)
    mask[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] = inside
    np.testing.assert_array_equal(result.image[~mask], image[~mask])  # Every pixel outside.
    assert (result.image[mask] != image[mask]).any(-1).mean() > 0.5
    # The polygon lies in the box's lower part: the forehead keeps its pixels.
    x, y, w, h = boxes[0]
    assert mask[y : y + h, x : x + w].mean() > 0.3 and not mask[y, x : x + w].any()
    # Inner eye corners close together: a small crop that misses the jaw's sides, whose mask
    # pixels are blacked out (never the original face), the rest generated.
    narrow = dict(kps[0])
    lm = narrow['landmarks68'].copy()
    mid = lm[[39, 42]].mean(0)
    lm[[39, 42]] = mid + (lm[[39, 42]] - mid) / 3
    narrow['landmarks68'] = lm
    result = method(image, boxes[:1], [narrow], np.random.default_rng(0))
    assert result.records == ['anonymized:mask_outside_crop']
    inputs = ciagan_faces.network_inputs(image, lm, R)
    y0, x0, inside = cg._polygon_region(lm, *image.shape[:2])
    ok = cg.covered(inputs.matrix, R, y0, x0, inside.shape)
    patch = result.image[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]]
    before = image[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]]
    assert (inside & ~ok).sum() > 20 and (patch[inside & ~ok] == 0).all()
    assert (patch[inside & ok] != before[inside & ok]).any(-1).mean() > 0.5
    np.testing.assert_array_equal(patch[~inside], before[~inside])


def test_fallbacks_black_out_and_small_faces_stay(generator_dir, wider_root):
    image, boxes, kps = _image_with_faces(wider_root)
    bad = dict(kps[1 % len(kps)])
    lm = bad['landmarks68'].copy()
    lm[[39, 42]] = lm[[42, 39]]  # x42 <= x39: degenerate.
    bad['landmarks68'] = lm
    x, y = boxes[0][:2]
    small = np.array([x, y, 8, 8])  # Narrower than 10 px.
    all_boxes = np.array([boxes[0], boxes[1 % len(boxes)], small])
    keypoints = [{'keypoints7': kps[0]['keypoints7']}, bad, None]  # No landmarks68 for face 0.
    method = base.create('ciagan', params=generator_dir)
    result = method(image[:], all_boxes, keypoints, np.random.default_rng(0))
    assert result.records == [
        'fallback:no_keypoints',
        'fallback:bad_landmarks',
        'skipped:below_min_face_px',
    ]
    for bx, by, bw, bh in all_boxes[:2]:
        assert (result.image[by : by + bh, bx : bx + bw] == 0).all()
    # Outside the blacked-out boxes nothing changed (the small box lies inside box 0).
    keep = np.ones(image.shape[:2], bool)
    for bx, by, bw, bh in all_boxes[:2]:
        keep[by : by + bh, bx : bx + bw] = False
    np.testing.assert_array_equal(result.image[keep], image[keep])
    lone = method(image, small[None], [None], np.random.default_rng(0))
    assert lone.records == ['skipped:below_min_face_px']
    np.testing.assert_array_equal(lone.image, image)


def test_target_identity_random_is_seeded_and_next_is_source_plus_one(generator_dir, wider_root):
    image, boxes, kps = _image_with_faces(wider_root)
    box, kp = boxes[:1], [dict(kps[0], identity=3)]
    rand = base.create('ciagan', params=generator_dir)

    def run(method, seed=0):
        return method(image, box, kp, np.random.default_rng(seed)).image

    np.testing.assert_array_equal(run(rand, 1), run(rand, 1))  # Same rng, same bytes.
    draws = {s: int(np.random.default_rng(s).integers(CLASSES)) for s in range(40)}
    four = next(s for s, c in draws.items() if c == 4)
    other = next(s for s, c in draws.items() if c != 4)
    nxt = base.create('ciagan', params=generator_dir, identity='next')
    # 'next' = (3 + 1) % 8 = 4: the output of the random draw that picked 4.
    np.testing.assert_array_equal(run(nxt, other), run(rand, four))
    assert not np.array_equal(run(rand, other), run(rand, four))
    with pytest.raises(ValueError, match="identity='next' needs"):
        nxt(image, box, [kps[0] | {'identity': None}], np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs the image's rng"):
        rand(image, box, kp)
    with pytest.raises(ValueError, match="'random' or 'next'"):
        base.create('ciagan', params=generator_dir, identity='first')
    with pytest.raises(ValueError, match='68 landmarks'):
        base.create('ciagan', params=generator_dir, keypoints='coco_json')


def test_params_and_a_missing_generator_names_the_train_command(generator_dir, tmp_path):
    params = base.create('ciagan', params=generator_dir).params()
    assert len(params['weights_sha256']) == 64 and 'weights' not in params
    assert params['resolution'] == R and params['num_classes'] == CLASSES
    assert params['keypoint_source'] == {'name': 'sidecar'} and params['identity'] == 'random'
    missing = base.create('ciagan', params=str(tmp_path / 'nothing'))
    with pytest.raises(cg.GeneratorNotFoundError, match='configs/ciagan_celeba.py:smoke'):
        missing.params()
    with pytest.raises(cg.GeneratorNotFoundError, match='--format=ciagan'):
        missing(np.zeros((40, 40, 3), np.uint8), [[5, 5, 20, 20]], None, None)
    other = tmp_path / 'other'
    torch_import.save_converted(other, {'w': np.zeros(2)}, {'format': 'deepprivacy'})
    with pytest.raises(ValueError, match='not a CIAGAN generator'):
        base.create('ciagan', params=str(other)).params()


def test_a_failing_generator_blacks_out(generator_dir, wider_root):
    image, boxes, kps = _image_with_faces(wider_root)
    method = base.create('ciagan', params=generator_dir)
    loaded = method._load()

    def broken(*args):
        raise RuntimeError('device lost')

    method._model = (*loaded[:4], broken)
    result = method(image, boxes[:1], kps[:1], np.random.default_rng(0))
    assert result.records == ['fallback:error:RuntimeError']
    x, y, w, h = boxes[0]
    assert (result.image[y : y + h, x : x + w] == 0).all()


def test_the_config_builds_the_method(generator_dir):
    from configs.anonymize import ciagan as config_module

    config = config_module.get_config('smoke')
    assert config.anonymizer.params == 'workdirs/ciagan_celeba_smoke/generator'
    config.anonymizer.params = generator_dir
    method = base.create_from_config(config.anonymizer)
    assert isinstance(method, cg.Ciagan) and method.keypoints == 'sidecar'
    assert config_module.get_config('').anonymizer.keypoints == 'dlib68'


def test_engine_copy_records_and_keeps_pixels_outside_the_masks(
    generator_dir, wider_root, tmp_path
):
    dst = tmp_path / 'wider_ciagan'
    summary = folders.anonymized_copy(
        wider_root,
        dst,
        'png',
        name='ciagan',
        params=generator_dir,
        keypoints='sidecar',
        face_batch=4,
    )
    assert not summary.failed
    with open(os.path.join(dst, manifest.MANIFEST)) as f:
        entries = {e['image']: e for e in map(json.loads, f)}
    records = landmarks_sidecar.read(landmarks_sidecar.path(wider_root, 'train'))
    assert len(entries) == len(records)
    counts: dict[str, int] = {}
    for _, rec in records:
        faces = entries[rec['image']]['faces']
        assert len(faces) == len(rec['faces'])
        src = images.read(wider_root / 'WIDER_train' / 'images' / rec['image'])
        out = images.read(dst / 'WIDER_train' / 'images' / rec['image'].replace('.jpg', '.png'))
        touched = np.zeros(src.shape[:2], bool)
        for face, record in zip(rec['faces'], faces, strict=True):
            counts[record.split(':')[0]] = counts.get(record.split(':')[0], 0) + 1
            x, y, w, h = face['box']
            if w < 10:
                assert record == 'skipped:below_min_face_px'
            elif record.startswith('fallback:'):
                touched[max(y, 0) : y + h, max(x, 0) : x + w] = True
            else:
                assert base.is_anonymized(record), record
                region = cg._polygon_region(np.asarray(face['landmarks68']), *src.shape[:2])
                y0, x0, inside = region
                touched[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] |= inside
        np.testing.assert_array_equal(out[~touched], src[~touched])
    assert counts.get('anonymized', 0) > 3 and counts.get('skipped', 0) > 0
    config = json.loads((dst / 'anonymization_config.json').read_text())
    assert 'weights_sha256' in json.dumps(config)
    assert ciagan_faces.loader_side(R) == 36


def test_engine_passes_the_sidecar_identity_for_identity_next(generator_dir, wider_root, tmp_path):
    """`identity='next'` through the engine: the sidecar's per-face identity reaches the
    method, so no image fails and every large face is generated."""
    dst = tmp_path / 'wider_ciagan_next'
    summary = folders.anonymized_copy(
        wider_root, dst, 'png', name='ciagan', params=generator_dir, identity='next'
    )
    assert not summary.failed
    with open(os.path.join(dst, manifest.MANIFEST)) as f:
        records = [r for e in map(json.loads, f) for r in e['faces']]
    assert any(r.startswith('anonymized') for r in records)
    assert not [r for r in records if r.startswith('fallback:error')], set(records)
