"""Tests for CIAGAN's data (`data/ciagan_faces.py`, `ciagan_sets.py`, `ciagan_pairs.py`): the
crop geometry, landmark and mask images against hand-computed pixels, the loader's views, the
inverse map, the synthetic and CelebA readers, and the resumable pair batches."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from safefakes_jax.data import ciagan_faces as cf
from safefakes_jax.data import (
    ciagan_pairs,
    ciagan_sets,
    images,
    landmarks_sidecar,
    synthetic,
    wider,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _landmarks(x39=100.0, x42=120.0, y=80.0) -> np.ndarray:
    """A frontal-ish 68-point layout around the eye corners 39 / 42 (image pixels)."""
    d = x42 - x39
    cx = (x39 + x42) / 2
    lm = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)  # Jaw 0..16: a U from ear to ear through the chin.
    lm[0:17] = np.c_[cx + 1.8 * d * t, y + 0.2 * d + 2.2 * d * (1 - t**2) ** 0.5]
    lm[17:27] = np.c_[np.linspace(cx - 1.7 * d, cx + 1.7 * d, 10), np.full(10, y - 0.6 * d)]
    lm[27:31] = np.c_[np.full(4, cx), np.linspace(y, y + 1.0 * d, 4)]
    lm[31:36] = np.c_[np.linspace(cx - 0.4 * d, cx + 0.4 * d, 5), np.full(5, y + 1.2 * d)]
    lm[36:42] = np.c_[np.linspace(cx - 1.5 * d, x39, 6), np.full(6, y)]
    lm[42:48] = np.c_[np.linspace(x42, cx + 1.5 * d, 6), np.full(6, y)]
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm[48:60] = np.c_[cx + 0.7 * d * np.cos(a), y + 1.7 * d + 0.3 * d * np.sin(a)]
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lm[60:68] = np.c_[cx + 0.5 * d * np.cos(a), y + 1.7 * d + 0.15 * d * np.sin(a)]
    lm[39], lm[42] = (x39, y), (x42, y)
    return lm


def test_crop_geometry_is_the_originals_and_degenerate_faces_raise():
    g = cf.crop_geometry(_landmarks(100.0, 120.7, 80.6))
    # c = int midpoint; h_r = int(20.7 * 5) = 103; w_r = int(103 / 218 * 178) = 84.
    assert (g.cx, g.cy, g.half_h, g.half_w) == (110, 80, 103, 84)
    assert (g.x0, g.y0, g.width, g.height) == (26, -23, 168, 206)
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), np.uint8)
    crop = cf.cut_face(image, g)
    assert crop.shape == (218, 178, 3) and crop.dtype == np.uint8
    # Edge padding: the rows above the image repeat row 0 (after the cubic resize, nearly).
    padded = cv2.copyMakeBorder(image, 23, 200, 0, 0, cv2.BORDER_REPLICATE)[:206, 26:194]
    want = cv2.resize(padded, (178, 218), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(crop, want)
    # Wholly outside the image: still the edge padding.
    far = cf.cut_face(image, cf.CropGeometry(-500, 60, 10, 12))
    np.testing.assert_array_equal(
        far,
        cv2.resize(np.repeat(image[48:72, :1], 20, 1), (178, 218), interpolation=cv2.INTER_CUBIC),
    )
    with pytest.raises(ValueError, match='degenerate'):
        cf.cut_face(image, cf.crop_geometry(_landmarks(0.0, 600.0)))
    for bad in (_landmarks(120.0, 100.0), _landmarks(100.0, 100.1)):
        with pytest.raises(ValueError, match='degenerate'):
            cf.crop_geometry(bad)
    with pytest.raises(ValueError, match='68, 2'):
        cf.crop_geometry(np.zeros((5, 2)))


def test_landmark_image_draws_29_points_in_blue_with_truncated_ends():
    lm = np.full((68, 2), 100.0)
    lm[0:17] = np.c_[10.9 + 5 * np.arange(17), np.full(17, 150.7)]  # A horizontal jaw.
    lm[27:31] = np.c_[np.full(4, 89.99), 20.2 + 10 * np.arange(4)]  # A vertical nose bridge.
    lm[60:68] = [
        [60, 170],
        [70, 170],
        [80, 170],
        [80, 175],
        [80, 180],
        [70, 180],
        [60, 180],
        [60, 175],
    ]  # A closed rectangle: 67 -> 60 closes the left side.
    img = cf.draw_landmarks(lm)
    assert img.shape == (218, 178, 3) and img.dtype == np.uint8
    blue = np.all(img == (0, 0, 255), -1)
    assert np.all(img[~blue] == 255)
    assert blue[150, 10:91].all() and not blue[150, 9] and not blue[150, 91]  # int(10.9) = 10.
    assert blue[20:51, 89].all() and not blue[19, 89] and not blue[51, 89]  # int(89.99) = 89.
    assert blue[170:181, 60].all() and blue[170, 60:81].all() and blue[180, 60:81].all()
    assert blue.sum() == 81 + 31 + 2 * 21 + 2 * 9
    assert len(set(cf.DRAWN_POINTS)) == 29  # Not the paper's 27.
    # The polylines set exactly the pixels of the original's 28 single lines.
    rng = np.random.default_rng(0)
    for _ in range(50):
        lm = rng.uniform(-20, 240, (68, 2))
        want = np.full((218, 178, 3), 255, np.uint8)
        for a, b in cf.SEGMENTS:
            pa, pb = (int(lm[a, 0]), int(lm[a, 1])), (int(lm[b, 0]), int(lm[b, 1]))
            cv2.line(want, pa, pb, (0, 0, 255), 1)
        np.testing.assert_array_equal(cf.draw_landmarks(lm), want)
        np.testing.assert_array_equal(cf.draw_landmarks(lm, channels=1), want[..., 0])


def test_mask_polygon_closes_at_eyebrow_height():
    lm = np.zeros((68, 2))
    lm[0:17] = np.c_[np.linspace(40.8, 140.2, 17), np.full(17, 100.0)]
    lm[0:17, 1] += 60 * np.sin(np.linspace(0, np.pi, 17))  # Jaw: a U below y = 100.
    lm[19, 1], lm[24, 1] = 50.9, 55.0  # Eyebrow heights close the polygon.
    poly = cf.mask_polygon(lm)
    assert poly.shape == (19, 2)
    np.testing.assert_allclose(poly[0], (40.8, 50.9))
    np.testing.assert_allclose(poly[-1], (140.2, 55.0))
    m = cf.draw_mask_image(lm)
    assert m.shape == (218, 178) and set(np.unique(m)) == {0, 255}
    assert m[50, 40] == 0 and m[55, 140] == 0  # The corners (astype(int): 40, 50 / 140, 55).
    assert m[49, 40] == 255 and m[50, 39] == 255 and m[55, 141] == 255
    assert m[120, 90] == 0 and m[165, 90] == 255  # Inside above the chin, outside below it.
    assert m[30, 90] == 255  # Above the eyebrows: not a hull of the face.
    # The loader's threshold: (1 - v / 255) > 0.2.
    assert cf.mask_from_image(np.array([0, 203, 204, 255], np.uint8)).tolist() == [
        True,
        True,
        False,
        False,
    ]


def test_loader_views_sizes_ranges_and_windows():
    assert cf.loader_side(128) == 144 and cf.loader_side(32) == 36
    assert cf.centre_window(144, 128) == (8, 8, 136, 136)
    assert cf.train_window(144, np.zeros(4)) == (36, 36, 108, 108)  # 72 px: min_sz.
    # max_sz = 108 is approached: rnd < 1 and int() truncate, so the widest is 107.
    assert cf.train_window(144, np.full(4, 0.999999)) == (18, 18, 125, 125)
    assert cf.train_window(144, np.ones(4)) == (18, 18, 126, 126)
    x0, y0, x1, y1 = cf.train_window(144, [0.5, 0.0, 0.0, 1.0])
    assert (x1 - x0, y1 - y0) == (81, 90)  # Each edge on its own.
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), np.uint8)
    for r in (128, 32):
        inputs = cf.network_inputs(image, _landmarks(150, 170, 100), r)
        assert inputs.face.shape == inputs.landmarks_image.shape == (r, r, 3)
        assert inputs.mask.shape == (r, r, 1)
        for a in (inputs.face, inputs.landmarks_image, inputs.mask):
            assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
        assert set(np.unique(inputs.mask)) == {0.0, 1.0}
        lndm = inputs.landmarks_image
        assert (lndm[..., 2] == 1).all() and (lndm[..., 0] == lndm[..., 1]).all()
        assert lndm[..., 0].min() < 0.5  # Lines survive the resizes.
        # The face's lower half is masked, the top rows (forehead) are not.
        assert inputs.mask[r // 2 :].mean() > 0.1 and inputs.mask[: r // 8].max() == 0


def test_inverse_map_takes_crop_pixels_back_to_the_image():
    lm = _landmarks(150.3, 171.9, 101.2)
    g = cf.crop_geometry(lm)
    for r in (128, 32):
        m = cf.crop_to_image(g, r)
        side = cf.loader_side(r)
        ox, oy = cf.centre_window(side, r)[:2]
        p = np.array([163.25, 131.5])  # An image point (pixel-centre coordinates).
        q = (p + 0.5 - (g.x0, g.y0)) * (178 / g.width, 218 / g.height) - 0.5  # -> 178 x 218.
        q = (q + 0.5) * side / (178, 218) - 0.5 - (ox, oy)  # -> S, then the window.
        np.testing.assert_allclose(m[:, :2] @ q + m[:, 2], p, atol=1e-9)
    # Empirically: a bright dot in the image comes out where the matrix says.
    image = np.zeros((300, 360, 3), np.uint8)
    cv2.circle(image, (161, 128), 3, (255, 255, 255), -1)
    face = cf.network_inputs(image, lm, 128).face[..., 0]
    ys, xs = np.mgrid[: face.shape[0], : face.shape[1]]
    k = np.array([(xs * face).sum(), (ys * face).sum()]) / face.sum()  # Its centroid (x, y).
    m = cf.crop_to_image(g, 128)
    np.testing.assert_allclose(m[:, :2] @ k + m[:, 2], (161, 128), atol=0.2)


@pytest.fixture(scope='module')
def wider_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('ciagan_wider')
    synthetic.generate(root, 6, 3, seed=0, workers=1, progress=False, width=480)
    return root


def test_synthetic_faces_builder_and_npz_round_trip(wider_root, tmp_path):
    faces = ciagan_sets.build_wider_faces(wider_root, 'train', 32, min_face_px=24)
    n = len(faces)
    assert n > 5 and faces.faces.shape == (n, 36, 36, 3) and faces.landmarks.shape == (n, 68, 2)
    assert faces.skipped['small'] > 0 and set(faces.skipped) >= {'small', 'invalid'}
    assert faces.identity.min() == 0 and faces.identity.max() == faces.num_classes - 1
    assert np.all(np.diff(faces.identity_names) > 0)  # Sorted identity labels.
    # Landmarks are in the 178 x 218 frame: the eye corners' midpoint is the crop's centre
    # (109, 89) up to the int() of the centre (< 1 image pixel: a few crop pixels when small).
    mid = faces.landmarks[:, [39, 42]].mean(1)
    np.testing.assert_allclose(mid, np.broadcast_to([89, 109], mid.shape), atol=5)
    assert np.abs(np.median(mid, 0) - (89, 109)).max() < 1.5
    assert all(':' in s for s in faces.source)
    faces.save(tmp_path / 'f.npz')
    again = ciagan_sets.CiaganFaces.load(tmp_path / 'f.npz')
    for key in ('faces', 'landmarks', 'identity', 'identity_names', 'source'):
        np.testing.assert_array_equal(getattr(again, key), getattr(faces, key))
    assert again.skipped == faces.skipped
    # The stored face's test view is the one-image pipeline's (what the anonymizer feeds).
    name, j = faces.source[0].rsplit(':', 1)
    image = images.read(wider_root / 'WIDER_train' / 'images' / name)
    sidecar = dict(landmarks_sidecar.read(landmarks_sidecar.path(wider_root, 'train')))
    rec = next(r for r in sidecar.values() if r['image'] == name)
    direct = cf.network_inputs(image, np.asarray(rec['faces'][int(j)]['landmarks68']), 32)
    face, lndm, mask = ciagan_pairs.face_inputs(faces, 0, 32)
    assert face.dtype == lndm.dtype == mask.dtype == np.uint8 and mask.shape == (32, 32, 1)
    np.testing.assert_array_equal(face, np.round(direct.face * 255).astype(np.uint8))
    np.testing.assert_array_equal(lndm, np.round(direct.landmarks_image * 255).astype(np.uint8))
    np.testing.assert_array_equal(mask, direct.mask.astype(np.uint8))
    # Val keeps the train mapping; its (disjoint) identities are unknown: -1.
    val = ciagan_sets.build_wider_faces(wider_root, 'val', 32, identity_names=faces.identity_names)
    assert len(val) and (val.identity == -1).all() and val.num_classes == faces.num_classes
    with pytest.raises(ValueError, match='no identity class'):
        next(ciagan_pairs.pair_batches(val, batch_size=2, sub_batches=1, resolution=32, seed=0))


def test_prepare_tool_writes_the_synthetic_faces(wider_root, tmp_path):
    out = tmp_path / 'faces.npz'
    cmd = [
        sys.executable,
        os.path.join(ROOT, 'tools/prepare_ciagan_faces.py'),
        f'--wider={wider_root}',
        '--split=train',
        '--resolution=32',
        f'--out={out}',
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(ciagan_sets.CiaganFaces.load(out)) == len(
        ciagan_sets.build_wider_faces(wider_root, 'train', 32)
    )


def _fake_celeba(root, identities: dict[str, int], partition: dict[str, int] | None = None):
    os.makedirs(root / 'img_align_celeba')
    rng = np.random.default_rng(0)
    for name in identities:
        cv2.imwrite(str(root / 'img_align_celeba' / name), rng.integers(0, 256, (218, 178, 3)))
    (root / 'identity_CelebA.txt').write_text(''.join(f'{k} {v}\n' for k, v in identities.items()))
    if partition:
        (root / 'list_eval_partition.txt').write_text(
            ''.join(f'{k} {v}\n' for k, v in partition.items())
        )


def test_celeba_reader_selects_identities_and_counts_misses(tmp_path):
    counts = {7: 3, 2: 4, 9: 3, 5: 1, 11: 3}  # Identity number: images.
    ids, k = {}, 1
    for ident, c in counts.items():
        for _ in range(c):
            ids[f'{k:06d}.jpg'] = ident
            k += 1
    _fake_celeba(tmp_path / 'celeba', ids, {name: 0 if i % 4 else 2 for i, name in enumerate(ids)})
    lm = _landmarks(80, 98, 100)
    seen = []

    def landmarker(image):
        seen.append(image.shape)
        return None if len(seen) == 2 else lm  # The second image: no face detected.

    faces = ciagan_sets.read_celeba(
        tmp_path / 'celeba', landmarker, 32, min_faces=3, num_identities=3, threads=1
    )
    # Identities with >= 3 images: 2, 7, 9, 11; the first 3 by number: 2, 7, 9.
    assert faces.identity_names.tolist() == [2, 7, 9]
    assert len(seen) == 10 and seen[0] == (218, 178, 3)
    assert len(faces) == 9 and faces.skipped == {'no_face_detected': 1, 'bad_landmarks': 0}
    assert sorted(set(faces.identity.tolist())) == [0, 1, 2]
    assert faces.faces.shape == (9, 36, 36, 3)
    assert ids[faces.source[0]] == faces.identity_names[faces.identity[0]]
    # Partition 0 only: every 4th image is in partition 2.
    train = ciagan_sets.read_celeba(
        tmp_path / 'celeba', lambda im: lm, 32, min_faces=3, partition='train', threads=1
    )
    assert train.identity_names.tolist() == [2]  # 7 / 9 / 11 lose an image to test.
    # The original's list (legit_indices.npy): its order is the class order.
    listed = ciagan_sets.read_celeba(
        tmp_path / 'celeba', lambda im: lm, 32, identities=[9, 5, 2], num_identities=2
    )
    assert listed.identity_names.tolist() == [9, 5] and len(listed) == 3 + 1
    assert all(ids[s] == (9, 5)[c] for s, c in zip(listed.source, listed.identity, strict=True))
    # Degenerate landmarks are counted as such.
    bad = ciagan_sets.read_celeba(
        tmp_path / 'celeba', lambda im: _landmarks(98, 80), 32, min_faces=4, threads=1
    )
    assert len(bad) == 0 and bad.skipped['bad_landmarks'] == 4


def test_celeba_malformed_identity_line_names_file_and_line(tmp_path):
    _fake_celeba(tmp_path / 'c', {'000001.jpg': 1, '000002.jpg': 1})
    ident = tmp_path / 'c' / 'identity_CelebA.txt'
    ident.write_text('000001.jpg 1\n000002.jpg one\n')
    with pytest.raises(wider.FormatError, match=r'identity_CelebA.txt:2: identity .one'):
        ciagan_sets.celeba_selection(tmp_path / 'c')
    ident.write_text('000001.jpg 1\n\n000002.jpg\n')
    with pytest.raises(wider.FormatError, match=r'identity_CelebA.txt:3: expected'):
        ciagan_sets.celeba_selection(tmp_path / 'c')
    with pytest.raises(FileNotFoundError, match='not a CelebA folder'):
        ciagan_sets.celeba_selection(tmp_path)


def _tiny_faces(n_ids=6, per_id=4, side=36) -> ciagan_sets.CiaganFaces:
    rng = np.random.default_rng(0)
    n = n_ids * per_id
    lm = np.stack([cf.crop_landmarks(_landmarks(100, 120), cf.crop_geometry(_landmarks()))] * n)
    return ciagan_sets.CiaganFaces(
        faces=rng.integers(0, 256, (n, side, side, 3), np.uint8),
        landmarks=lm + rng.normal(0, 2, lm.shape).astype(np.float32),
        identity=np.repeat(np.arange(n_ids), per_id).astype(np.int32),
        identity_names=np.arange(n_ids) * 10,
        source=np.array([f'f{i}' for i in range(n)]),
    )


def test_pair_batches_shapes_same_half_and_determinism():
    faces = _tiny_faces()
    kw = dict(batch_size=8, sub_batches=3, resolution=32, seed=5)
    it = ciagan_pairs.pair_batches(faces, **kw)
    batches = [next(it) for _ in range(3)]
    b = batches[0]
    assert b['face'].shape == b['landmarks'].shape == b['target_face'].shape == (8, 3, 32, 32, 3)
    assert b['mask'].shape == (8, 3, 32, 32, 1) and set(np.unique(b['mask'])) == {0, 1}
    assert b['identity'].shape == b['same'].shape == (8, 3) and b['identity'].dtype == np.int32
    assert b['same'].dtype == np.float32 and b['position'].tolist() == list(range(8))
    assert all(v.dtype == np.uint8 for k, v in b.items() if k in ('face', 'landmarks', 'mask'))
    assert (b['landmarks'][..., 2] == 255).all()
    for step, batch in enumerate(batches):
        for k in range(3):
            planned = ciagan_pairs.same_rows(5, step, k, 8)
            assert planned.sum() == 4 and (batch['same'][planned, k] == 1).all()
    # The face rows differ (fresh draws), the stream repeats exactly.
    again = ciagan_pairs.pair_batches(faces, **kw, threads=1)
    for want in batches:
        got = next(again)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    # Eval view: the centre crop of the stored square.
    ev = next(ciagan_pairs.pair_batches(faces, **kw, train=False))
    assert ev['face'].shape == (8, 3, 32, 32, 3)


def test_pair_batches_resume_and_hosts_match_the_uninterrupted_stream():
    faces = _tiny_faces()
    kw = dict(batch_size=4, sub_batches=2, resolution=32, seed=0)
    full = ciagan_pairs.pair_batches(faces, **kw)
    stream = [next(full) for _ in range(4)]
    # Resume from max(position) + 1 after step 1, also from a host's local maximum.
    for start in (8, 5, 6):
        resumed = next(ciagan_pairs.pair_batches(faces, **kw, start_position=start))
        assert resumed['position'].tolist() == [8, 9, 10, 11]
        np.testing.assert_array_equal(resumed['face'], stream[2]['face'])
        np.testing.assert_array_equal(resumed['identity'], stream[2]['identity'])
    # Two hosts: each gets its rows of the same global batch.
    hosts = [
        next(ciagan_pairs.pair_batches(faces, **kw, process_index=p, process_count=2))
        for p in (0, 1)
    ]
    for key in stream[0]:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts]), stream[0][key])
    with pytest.raises(ValueError, match='multiple of process_count'):
        next(ciagan_pairs.pair_batches(faces, **kw | {'batch_size': 3}, process_count=2))
