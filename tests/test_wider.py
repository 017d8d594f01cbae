"""Tests for the WIDER FACE formats (txt, .mat, prediction folders)."""

import os

import numpy as np
import pytest
import scipy.io

from safefakes_jax.data import wider, wider_mat

# Rows end in a space, as in the official files.
TXT = ''.join(
    line + '\n'
    for line in [
        '0--Parade/0_Parade_marchingband_1_465.jpg',
        '2',
        '345 211 4 4 2 0 0 0 2 0 ',
        '331 126 3 3 0 0 0 1 0 0 ',
        '0--Parade/0_Parade_Parade_0_275.jpg',
        '0',
        '0 0 0 0 0 0 0 0 0 0 ',
        '1--Handshaking/1_Handshaking_Handshaking_1_94.jpg',
        '1',
        '10 20 30 40 1 1 1 0 1 1 ',
    ]
)


def _anns():
    return [
        wider.ImageAnnotation(
            '0--Parade/a_1.jpg',
            [[1, 2, 30, 40], [5, 6, 7, 8]],
            [[0, 0, 0, 0, 0, 0], [2, 1, 1, 1, 2, 1]],
        ),
        wider.ImageAnnotation('0--Parade/a_2.jpg', np.zeros((0, 4)), np.zeros((0, 6))),
        wider.ImageAnnotation('10--People_Marching/b_1.jpg', [[0, 0, 1, 1]], [[1, 0, 0, 0, 0, 0]]),
        wider.ImageAnnotation(
            '2--Demonstration/c_1.jpg',
            [[9, 9, 50, 60], [0, 0, 0, 0]],
            [[0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]],
        ),
    ]


def _write(tmp_path, text, name='gt.txt'):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_official_sample_with_zero_face_dummy(tmp_path):
    anns = wider.read_bbx_gt(_write(tmp_path, TXT))
    assert [a.name for a in anns] == [
        '0--Parade/0_Parade_marchingband_1_465.jpg',
        '0--Parade/0_Parade_Parade_0_275.jpg',
        '1--Handshaking/1_Handshaking_Handshaking_1_94.jpg',
    ]
    np.testing.assert_array_equal(anns[0].boxes, [[345, 211, 4, 4], [331, 126, 3, 3]])
    np.testing.assert_array_equal(anns[0].attributes[1], [0, 0, 0, 1, 0, 0])
    assert anns[1].boxes.shape == (0, 4)  # The dummy row is not a face.
    assert anns[2].event == '1--Handshaking'
    assert anns[2].stem == '1_Handshaking_Handshaking_1_94'
    assert anns[0].boxes.dtype == np.int32


def test_txt_round_trip(tmp_path):
    anns = _anns()
    path = tmp_path / 'split' / 'out.txt'
    wider.write_bbx_gt(path, anns)
    text = path.read_text()
    assert '0 0 0 0 0 0 0 0 0 0 \n' in text  # 0-face image gets its dummy row.
    back = wider.read_bbx_gt(path)
    assert len(back) == len(anns)
    for a, b in zip(anns, back, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.attributes, b.attributes)
    # Writing what was read gives the same bytes.
    wider.write_bbx_gt(tmp_path / 'again.txt', back)
    assert (tmp_path / 'again.txt').read_text() == text
    assert not [f for f in os.listdir(path.parent) if f.endswith('.tmp')]


def test_zero_face_without_dummy_row_is_accepted(tmp_path):
    text = 'e--E/a.jpg\n0\ne--E/b.jpg\n1\n1 1 2 2 0 0 0 0 0 0\n'
    anns = wider.read_bbx_gt(_write(tmp_path, text))
    assert [len(a.boxes) for a in anns] == [0, 1]


@pytest.mark.parametrize(
    'text, line, match',
    [
        ('e--E/a.jpg\n2\n1 1 2 2 0 0 0 0 0 0\ne--E/b.jpg\n0\n', 4, 'count says 2 faces'),
        ('e--E/a.jpg\n1\n1 1 2 2 0 0 0 0 0 0\n3 3 4 4 0 0 0 0 0 0\n', 4, 'more rows follow'),
        ('e--E/a.jpg\n1\n1 1 x 2 0 0 0 0 0 0\n', 3, 'non-integer'),
        ('e--E/a.jpg\ntwo\n', 2, 'non-integer'),
        ('e--E/a.jpg\n1\n1 1 2 0 0 0 0 0 0\n', 3, 'expected 10 fields'),
        ('e--E/a.jpg\n1\n1 1 -2 5 0 0 0 0 0 0\n', 3, 'negative box size'),
        ('e--E/a.jpg\n-1\n', 2, 'negative face count'),
        ('e--E/a.jpg\n', 1, 'missing face count'),
        ('not an image\n1\n', 1, 'expected an image path'),
        ('e--E/a.jpg\n1\n1 1 2147483648 2 0 0 0 0 0 0\n', 3, 'out of the int32 range'),
        ('e--E/a.jpg\n0\ne--E/b.jpg\n0\ne--E/a.jpg\n0\n', 5, r'listed twice \(lines 1 and 5\)'),
        ('e--E/a.jpg\n0\n../x.jpg\n0\n', 3, 'must be relative'),
        ('/tmp/x.jpg\n0\n', 1, 'absolute path'),
    ],
)
def test_malformed_txt_names_file_and_line(tmp_path, text, line, match):
    path = _write(tmp_path, text)
    with pytest.raises(wider.FormatError, match=match) as err:
        wider.read_bbx_gt(path)
    assert str(err.value).startswith(f'{path}:{line}:')
    assert err.value.line == line


@pytest.mark.parametrize(
    'data, line, match',
    [
        (b'\xef\xbb\xbfe--E/a.jpg\n0\n', 1, 'byte-order mark'),
        (b'e--E/a.jpg\n0\ne--E/\xff.jpg\n0\n', 3, 'not valid UTF-8'),
    ],
)
def test_bom_and_non_utf8_files_name_file_and_line(tmp_path, data, line, match):
    path = tmp_path / 'gt.txt'
    path.write_bytes(data)
    for read in (wider.read_bbx_gt, wider.read_prediction_file):
        with pytest.raises(wider.FormatError, match=match) as err:
            read(path)
        assert str(err.value).startswith(f'{path}:{line}:')


def test_names_resolving_outside_the_images_folder_are_refused(tmp_path):
    images = tmp_path / 'images'
    (images / 'e--E').mkdir(parents=True)
    (tmp_path / 'outside.jpg').write_bytes(b'x')
    (images / 'e--E' / 'a.jpg').symlink_to(tmp_path / 'outside.jpg')
    path = _write(tmp_path, 'e--E/a.jpg\n0\n')
    with pytest.raises(ValueError, match=r'gt.txt:1: .*outside'):
        wider.read_bbx_gt(path, images, strict=True)
    # The same for prediction folders: a symlinked event folder leads out of it.
    preds = tmp_path / 'preds'
    preds.mkdir()
    (tmp_path / 'elsewhere').mkdir()
    (preds / 'e--E').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
    with pytest.raises(ValueError, match='outside'):
        wider.read_predictions(preds)


def test_negative_size_allowed_on_request(tmp_path):
    anns = wider.read_bbx_gt(
        _write(tmp_path, 'e--E/a.jpg\n1\n1 1 -2 5 0 0 0 0 0 0\n'), allow_negative=True
    )
    assert anns[0].boxes[0, 2] == -2
    assert anns[0].valid_boxes.shape == (0, 4)


def test_missing_images_strict_and_lenient(tmp_path):
    images = tmp_path / 'images'
    (images / 'e--E').mkdir(parents=True)
    (images / 'e--E' / 'a.jpg').write_bytes(b'x')
    path = _write(
        tmp_path, 'e--E/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\ne--E/b.jpg\n1\n1 1 2 2 0 0 0 0 0 0\n'
    )
    with pytest.raises(FileNotFoundError, match=r'gt.txt:4: image e--E/b.jpg not found'):
        wider.read_bbx_gt(path, images, strict=True)
    with pytest.warns(UserWarning, match='skipped 1 listed images'):
        anns = wider.read_bbx_gt(path, images)
    assert [a.name for a in anns] == ['e--E/a.jpg']


def _keep():
    return {
        'hard': [np.array([0, 1]), np.array([], int), np.array([0]), np.array([0])],
        'medium': [np.array([0]), np.array([], int), np.array([], int), np.array([0])],
        'easy': [np.array([], int), np.array([], int), np.array([], int), np.array([0])],
    }


def test_mat_official_structure(tmp_path):
    anns = _anns()
    wider_mat.write_ground_truth(tmp_path, anns, _keep())
    m = scipy.io.loadmat(tmp_path / 'wider_face_val.mat')
    # Events in the official order: by event number.
    assert [str(m['event_list'][i][0][0]) for i in range(3)] == [
        '0--Parade',
        '2--Demonstration',
        '10--People_Marching',
    ]
    assert m['event_list'].shape == (3, 1)
    assert str(m['file_list'][0][0][1][0][0]) == 'a_2'
    assert m['file_list'][0][0].shape == (2, 1)
    np.testing.assert_array_equal(m['face_bbx_list'][0][0][0][0], [[1, 2, 30, 40], [5, 6, 7, 8]])
    np.testing.assert_array_equal(m['face_bbx_list'][0][0][1][0], [[0, 0, 0, 0]])  # 0 faces.
    np.testing.assert_array_equal(m['occlusion_label_list'][0][0][0][0], [[0], [2]])
    for name in ('blur', 'expression', 'illumination', 'invalid', 'occlusion', 'pose'):
        assert f'{name}_label_list' in m
    hard = scipy.io.loadmat(tmp_path / 'wider_hard_val.mat')
    np.testing.assert_array_equal(hard['gt_list'][0][0][0][0], [[1], [2]])  # 1-based column.
    assert hard['gt_list'][0][0][1][0].shape == (0, 1)
    assert 'face_bbx_list' in hard


def test_mat_round_trip(tmp_path):
    anns = _anns()
    wider_mat.write_ground_truth(tmp_path, anns, _keep())
    gt = wider_mat.read_ground_truth(tmp_path)
    assert gt.events == ['0--Parade', '2--Demonstration', '10--People_Marching']
    by_stem = {im.stem: im for im in gt.images}
    assert sorted(by_stem) == ['a_1', 'a_2', 'b_1', 'c_1']
    np.testing.assert_array_equal(by_stem['c_1'].boxes, [[9, 9, 50, 60], [0, 0, 0, 0]])
    np.testing.assert_array_equal(by_stem['a_1'].keep['hard'], [0, 1])
    np.testing.assert_array_equal(by_stem['a_1'].keep['medium'], [0])
    assert by_stem['a_2'].keep['easy'].size == 0
    np.testing.assert_array_equal(by_stem['c_1'].keep['easy'], [0])


def _variables(m):
    return {k: v for k, v in m.items() if not k.startswith('__')}


def test_mat_keep_indices_int_written_double_accepted(tmp_path):
    anns = _anns()[:1]
    wider_mat.write_ground_truth(tmp_path, anns, {s: [np.array([1])] for s in wider.SETTINGS})
    m = scipy.io.loadmat(tmp_path / 'wider_hard_val.mat')
    assert m['gt_list'][0][0][0][0].dtype == np.int32
    m['gt_list'][0][0][0][0] = np.array([[2.0]])  # MATLAB's default double.
    scipy.io.savemat(tmp_path / 'wider_hard_val.mat', _variables(m))
    gt = wider_mat.read_ground_truth(tmp_path)
    np.testing.assert_array_equal(gt.images[0].keep['hard'], [1])


def test_mat_bad_keep_index(tmp_path):
    anns = _anns()[:1]
    with pytest.raises(ValueError, match='keep index out of range'):
        wider_mat.write_ground_truth(tmp_path, anns, {s: [np.array([5])] for s in wider.SETTINGS})
    wider_mat.write_ground_truth(tmp_path, anns, {s: [np.array([0])] for s in wider.SETTINGS})
    m = scipy.io.loadmat(tmp_path / 'wider_easy_val.mat')
    m['gt_list'][0][0][0][0] = np.array([[0.0]])  # 0 is not a 1-based index.
    scipy.io.savemat(tmp_path / 'wider_easy_val.mat', _variables(m))
    with pytest.raises(wider.FormatError, match='wider_easy_val.mat.*1-based'):
        wider_mat.read_ground_truth(tmp_path)


def test_missing_mat_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='wider_face_val.mat'):
        wider_mat.read_ground_truth(tmp_path)


def test_predictions_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    preds = {('0--Parade', 'a_1'): rng.random((3, 5)) * 100, ('2--Demo', 'c_1'): np.zeros((0, 5))}
    wider.write_predictions(tmp_path, preds)
    lines = (tmp_path / '0--Parade' / 'a_1.txt').read_text().splitlines()
    assert lines[:2] == ['a_1', '3']
    back = wider.read_predictions(tmp_path)
    assert back.keys() == preds.keys()
    for key, dets in preds.items():
        np.testing.assert_array_equal(back[key], dets)  # Bit-exact.


@pytest.mark.parametrize(
    'text, line, match',
    [
        ('a\n1\n1 2 3 4\n', 3, 'expected 5 fields'),
        ('a\n1\n1 2 3 4 x\n', 3, 'non-numeric'),
        ('a\n2\n1 2 3 4 0.5\n1 2 3 4 nan\n', 4, 'NaN or infinite'),
        ('a\n1\n1 2 3 inf 0.5\n', 3, 'NaN or infinite'),
        ('a\none\n', 2, 'detection count'),
    ],
)
def test_malformed_prediction_names_file_and_line(tmp_path, text, line, match):
    path = _write(tmp_path, text, 'p.txt')
    with pytest.raises(wider.FormatError, match=match) as err:
        wider.read_prediction_file(path)
    assert str(err.value).startswith(f'{path}:{line}:')


def test_prediction_count_mismatch_warns_and_rows_win(tmp_path):
    path = _write(tmp_path, 'a\n3\n1 2 3 4 0.5\n', 'p.txt')
    with pytest.warns(UserWarning, match='p.txt:2: count says 3 detections but 1 rows'):
        dets = wider.read_prediction_file(path)
    assert dets.shape == (1, 5)
    assert wider.read_prediction_file(_write(tmp_path, 'a\n0\n', 'q.txt')).shape == (0, 5)


def test_require_split_names_missing_folder(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r'wider_face_train_bbx_gt.txt is missing.*'
        r'Create it with: make it',
    ):
        wider.require_split(tmp_path, 'train', 'make it')
    txt, images = wider.split_paths(tmp_path, 'val')
    os.makedirs(images)
    wider.write_bbx_gt(txt, [])
    assert wider.require_split(tmp_path, 'val') == (txt, images)
