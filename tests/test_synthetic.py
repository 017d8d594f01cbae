"""Tests of the synthetic WIDER FACE generator (layout, formats, determinism, sidecar)."""

import json
import os

import cv2
import numpy as np
import pytest
import scipy.io

from safefakes_jax.data import synthetic, synthetic_scene, wider, wider_mat
from safefakes_jax.data import synthetic_faces as sf
from safefakes_jax.data import synthetic_person as sp
from tests.folders import read_tree

N_TRAIN, N_VAL = 6, 4
KW = dict(n_train_ids=30, n_val_ids=20, progress=False)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Seed 0 with two workers and with one, and seed 1."""
    dirs = {k: tmp_path_factory.mktemp(k) for k in ('a', 'b', 'c')}
    summary = synthetic.generate(dirs['a'], N_TRAIN, N_VAL, seed=0, workers=2, **KW)
    synthetic.generate(dirs['b'], N_TRAIN, N_VAL, seed=0, workers=1, **KW)
    synthetic.generate(dirs['c'], N_TRAIN, N_VAL, seed=1, workers=1, **KW)
    return dirs, summary


@pytest.fixture(scope='module')
def root(runs):
    return runs[0]['a']


def _sidecar(root, split):
    with open(os.path.join(root, 'landmarks', f'{split}.jsonl'), encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def _annotations(root, split):
    txt, images = wider.split_paths(root, split)
    return wider.read_bbx_gt(txt, images, strict=True)


def test_same_seed_same_bytes_whatever_the_workers(runs):
    dirs, _ = runs
    a, b = read_tree(dirs['a']), read_tree(dirs['b'])
    assert sorted(a) == sorted(b)
    for rel in a:
        if rel.endswith('.mat'):  # The .mat header holds a creation time; compare contents.
            ma, mb = scipy.io.loadmat(dirs['a'] / rel), scipy.io.loadmat(dirs['b'] / rel)
            assert str(ma['face_bbx_list']) == str(mb['face_bbx_list'])
            assert str(ma.get('gt_list')) == str(mb.get('gt_list'))
        else:
            assert a[rel] == b[rel], rel


def test_different_seed_differs(runs):
    dirs, _ = runs
    txt = 'wider_face_split/wider_face_train_bbx_gt.txt'
    assert (dirs['a'] / txt).read_bytes() != (dirs['c'] / txt).read_bytes()
    assert (dirs['a'] / 'landmarks/val.jsonl').read_bytes() != (
        dirs['c'] / 'landmarks/val.jsonl'
    ).read_bytes()


def test_layout_is_exactly_the_official_one(root):
    expected = {
        'wider_face_split/wider_face_train_bbx_gt.txt',
        'wider_face_split/wider_face_val_bbx_gt.txt',
        'landmarks/train.jsonl',
        'landmarks/val.jsonl',
        'synthetic_info.json',
        *(
            f'eval_tools/ground_truth/{n}_val.mat'
            for n in ('wider_face', 'wider_easy', 'wider_medium', 'wider_hard')
        ),
    }
    for split, n in (('train', N_TRAIN), ('val', N_VAL)):
        anns = _annotations(root, split)
        assert len(anns) == n
        expected |= {f'WIDER_{split}/images/{a.name}' for a in anns}
        for a in anns:
            event, stem = a.name.split('/')
            k, word = event.split('--')
            assert stem.startswith(f'{k}_{word}_') and stem.endswith('.jpg')
            img = cv2.imread(str(root / f'WIDER_{split}' / 'images' / a.name))
            assert img.shape[1] == 1024 and 600 <= img.shape[0] <= 1000
    assert set(read_tree(root)) == expected
    info = json.loads((root / 'synthetic_info.json').read_text())
    assert info['seed'] == 0 and info['splits']['val']['images'] == N_VAL
    assert info['difficulty_rule'] == synthetic.DIFFICULTY_RULE


def test_zero_face_image_has_dummy_row(root):
    anns = _annotations(root, 'train')
    assert len(anns[1].boxes) == 0  # index % ZERO_FACE_EVERY == 1
    lines = (root / 'wider_face_split/wider_face_train_bbx_gt.txt').read_text().splitlines()
    i = lines.index(anns[1].name)
    assert lines[i + 1] == '0' and lines[i + 2].split() == ['0'] * 10
    assert all(len(a.boxes) > 0 for k, a in enumerate(anns) if k != 1)


def test_mat_files_official_structure_and_keep_lists(root):
    anns = _annotations(root, 'val')
    by_stem = {a.stem: a for a in anns}
    gt_dir = root / 'eval_tools' / 'ground_truth'
    full = scipy.io.loadmat(gt_dir / 'wider_face_val.mat')
    events = [str(full['event_list'][i][0][0]) for i in range(len(full['event_list']))]
    assert events == sorted({a.event for a in anns}, key=lambda e: int(e.split('--')[0]))
    for i in range(len(events)):
        for j in range(len(full['file_list'][i][0])):
            stem = str(full['file_list'][i][0][j][0][0])
            boxes = full['face_bbx_list'][i][0][j][0]
            a = by_stem[stem]
            np.testing.assert_array_equal(boxes, a.boxes if len(a.boxes) else np.zeros((1, 4)))
            blur = full['blur_label_list'][i][0][j][0]
            assert blur.shape == (max(1, len(a.boxes)), 1)
    sets = {}
    for setting in ('easy', 'medium', 'hard'):
        m = scipy.io.loadmat(gt_dir / f'wider_{setting}_val.mat')
        assert 'gt_list' in m and 'face_bbx_list' in m
        sets[setting] = {
            (str(m['file_list'][i][0][j][0][0]), int(k) - 1)  # 1-based on disk.
            for i in range(len(events))
            for j in range(len(m['gt_list'][i][0]))
            for k in np.asarray(m['gt_list'][i][0][j][0]).reshape(-1)
        }
    assert sets['easy'] <= sets['medium'] <= sets['hard']
    assert sets['easy'] and sets['hard'] - sets['medium']
    invalid = wider.ATTRIBUTE_NAMES.index('invalid')
    for stem, k in sets['hard']:
        assert by_stem[stem].attributes[k, invalid] == 0
        assert by_stem[stem].boxes[k, 3] >= 10
    gt = wider_mat.read_ground_truth(gt_dir)
    for image in gt.images:
        expected = synthetic.difficulty_keep(
            by_stem[image.stem].boxes, by_stem[image.stem].attributes
        )
        for setting in wider.SETTINGS:
            np.testing.assert_array_equal(image.keep[setting], expected[setting])


def test_difficulty_rule():
    boxes = np.array(
        [
            [0, 0, 40, 60],
            [0, 0, 20, 40],
            [0, 0, 8, 12],
            [0, 0, 40, 60],
            [0, 0, 5, 8],
            [0, 0, 40, 60],
        ]
    )
    attrs = np.zeros((6, 6), np.int32)
    attrs[3, 0] = 1  # blur 1: medium, not easy
    attrs[5, 3] = 1  # invalid: never kept
    keep = synthetic.difficulty_keep(boxes, attrs)
    assert keep['easy'].tolist() == [0]
    assert keep['medium'].tolist() == [0, 1, 3]
    assert keep['hard'].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_sidecar_consistent_with_txt_and_image(root, split):
    anns, records = _annotations(root, split), _sidecar(root, split)
    assert [a.name for a in anns] == [r['image'] for r in records]
    names = dict(zip(wider.ATTRIBUTE_NAMES, range(6), strict=True))
    first, last = synthetic_scene.Config(
        **{k: v for k, v in KW.items() if k != 'progress'}
    ).identity_pool(split)
    for ann, rec in zip(anns, records, strict=True):
        w, h = rec['width'], rec['height']
        assert len(rec['faces']) == len(ann.boxes)
        for face, box, attrs in zip(rec['faces'], ann.boxes, ann.attributes, strict=True):
            x, y, bw, bh = face['box']
            assert list(box) == face['box'] and bw >= 1 and bh >= 1
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            lm = np.asarray(face['landmarks68'])
            assert lm.shape == (68, 2)
            assert np.all(lm >= [x - 1, y - 1]) and np.all(lm <= [x + bw + 1, y + bh + 1])
            # The box is tight; its bottom is always set by the jaw (the top by the forehead).
            assert lm[:, 1].max() > y + bh - 1
            kp = np.asarray(face['keypoints7'])
            assert kp.shape == (7, 3) and set(kp[:, 2]) <= {0, 1}
            assert np.all(kp[kp[:, 2] == 0, :2] == 0)
            assert kp[0, 2] == 1 and kp[1, 2] + kp[2, 2] >= 1
            for p in kp[:3][kp[:3, 2] == 1]:
                assert x - 1 <= p[0] <= x + bw + 1 and y - 1 <= p[1] <= y + bh + 1
            vis = kp[kp[:, 2] == 1]
            assert np.all(vis[:, :2] >= 0) and np.all(vis[:, :2] <= [w - 1, h - 1])
            assert first <= face['identity'] < last
            # Attributes follow the documented rules.
            f = face['occlusion_fraction']
            assert attrs[names['occlusion']] == (0 if f < 0.1 else 1 if f < 0.4 else 2)
            assert attrs[names['pose']] == int(abs(face['yaw']) > 45 or abs(face['roll']) > 30)
            assert attrs[names['invalid']] == int(bw < 4 or bh < 4 or f > 0.75)


def test_identities_recur_and_pools_are_disjoint(root):
    train = _sidecar(root, 'train')
    images_of = {}
    for k, rec in enumerate(train):
        for face in rec['faces']:
            images_of.setdefault(face['identity'], set()).add(k)
    assert any(len(v) >= 2 for v in images_of.values())
    val_ids = {f['identity'] for r in _sidecar(root, 'val') for f in r['faces']}
    assert val_ids and not val_ids & set(images_of)
    # An identity has the same parameters wherever it appears.
    assert sf.sample_identity(3, 0) == sf.sample_identity(3, 0)
    assert sf.sample_identity(3, 0) != sf.sample_identity(4, 0)


def test_face_pixels_differ_from_background():
    cfg = synthetic_scene.Config()
    img, rendered = synthetic_scene.render_image(cfg, 'val', 0, 4)
    empty, _ = synthetic_scene.render_image(cfg, 'val', 0, 4, people=False)
    faces = rendered.record['faces']
    assert faces
    big = max(faces, key=lambda f: f['box'][2] * f['box'][3])
    x, y, w, h = big['box']
    assert w >= 20
    diff = np.abs(img.astype(int) - empty.astype(int))
    assert diff[y : y + h, x : x + w].mean() > 15
    # Away from every person (boxes grown to cover hair and bodies) only the noise differs.
    mask = np.ones(img.shape[:2], bool)
    for f in faces:
        fx, fy, fw, fh = f['box']
        mask[max(0, fy - 2 * fh) :, max(0, fx - 2 * fw) : fx + 3 * fw] = False
    assert mask.any() and diff[mask].mean() < 10


def test_person_drawing_follows_landmarks():
    img = np.full((300, 300, 3), 128, np.uint8)
    owner = np.full((300, 300), -1, np.int16)
    ident = sf.sample_identity(5, 0)
    person = sp.Person(ident, sf.Expression(), sp.Pose(), scale=50)
    person.offset = np.array([150.0, 120.0])
    person.draw(sp.Canvas(img, owner), owner=0)
    lm, _ = person.face_points()
    cheek = np.round((lm[3] + lm[31]) / 2).astype(int)  # Between jaw and nose: plain skin.
    np.testing.assert_allclose(img[cheek[1], cheek[0]], ident.skin, atol=2)
    eye = np.round(lm[36:42].mean(0)).astype(int)
    assert np.abs(img[eye[1], eye[0]].astype(int) - np.array(ident.skin)).sum() > 30
    assert owner[cheek[1], cheek[0]] == 0 and owner[5, 5] == -1
    # Landmark order: the jaw runs from image left to right, brows above eyes above mouth.
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]
    assert lm[17:27, 1].max() < lm[36:48, 1].min() < lm[48:68, 1].min()
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]


def test_yaw_moves_nose_towards_image_right():
    ident = sf.sample_identity(1, 0)
    left = sp.Person(ident, sf.Expression(), sp.Pose(yaw=-30), 50).face_points()[0]
    right = sp.Person(ident, sf.Expression(), sp.Pose(yaw=30), 50).face_points()[0]
    assert right[30, 0] > 0 > left[30, 0]
    # Yaw towards the image right turns the person's left ear (+x) away.
    facing = sp.Person(ident, sf.Expression(), sp.Pose(yaw=40), 50).ear_facing()
    assert facing[1] < -0.25 < facing[0]


@pytest.mark.slow
def test_full_size_difficulty_proportions(tmp_path):
    # Timing lives in benchmarks/synthetic_wider.py; here only the WIDER-like proportions.
    summary = synthetic.generate(tmp_path, 1000, 300, seed=0, progress=False)
    val = summary['splits']['val']
    assert 0.7 < val['hard_fraction_of_valid'] < 0.9
    assert 0.25 < val['medium_fraction_of_valid'] < 0.45
    assert 0.1 < val['easy_fraction_of_valid'] < 0.26
