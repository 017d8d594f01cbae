"""Tests for the offline TFDS builder of WIDER-layout folders."""

import os
import shutil
import socket

import cv2
import numpy as np
import pytest

from safefakes_jax.data import tfds_wider, wider
from tests.folders import write_wider_split


def make_wider(root, n_train=5, n_val=3, seed=0):
    """A tiny WIDER-layout folder of random JPEGs; returns {split: annotations}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (('train', n_train), ('val', n_val)):
        items = []
        for i in range(n):
            w, h = int(rng.integers(120, 260)), int(rng.integers(90, 200))
            name = f'{i % 2}--Event/{split}_{i}.jpg'
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            k = 0 if i == 1 else int(rng.integers(1, 5))
            boxes = np.stack(
                [
                    rng.integers(0, w - 30, k),
                    rng.integers(0, h - 30, k),
                    rng.integers(4, 30, k),
                    rng.integers(4, 30, k),
                ],
                -1,
            )
            attrs = rng.integers(0, 3, (k, 6))
            if i == 0:  # A box past the right edge and a zero-width row: clipped / dropped.
                boxes = np.concatenate([boxes, [[w - 10, 5, 25, 20], [3, 3, 0, 8]]])
                attrs = np.concatenate([attrs, [[1, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0]]])
            items.append((name, image, boxes, attrs))
        out[split] = write_wider_split(root, split, items)
    return out


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('tfds') / 'wider'
    anns = make_wider(str(root))
    return str(root), anns, str(root.parent / 'data_dir')


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError('network access in an offline test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def _expected(ann, width, height):
    """Normalised ymin xmin ymax xmax of the real faces, clipped to the image."""
    b = ann.boxes.astype(np.float64)
    keep = (b[:, 2] > 0) & (b[:, 3] > 0)
    b = b[keep]
    x1, y1 = np.clip(b[:, 0], 0, width), np.clip(b[:, 1], 0, height)
    x2, y2 = np.clip(b[:, 0] + b[:, 2], 0, width), np.clip(b[:, 1] + b[:, 3], 0, height)
    return np.stack([y1 / height, x1 / width, y2 / height, x2 / width], -1), ann.attributes[keep]


def test_prepares_offline_and_round_trips(folder, no_network):
    root, anns, data_dir = folder
    b = tfds_wider.prepare(root, data_dir)
    assert sorted(b.info.splits) == ['train', 'validation']
    assert b.info.splits['train'].num_examples == len(anns['train'])
    by_name = {a.name: a for a in anns['train']}
    seen = set()
    for ex in tfds_wider.load(root, 'train', data_dir).as_numpy_iterator():
        name = ex['image/filename'].decode()
        seen.add(name)
        ann = by_name[name]
        img = cv2.imread(os.path.join(root, 'WIDER_train', 'images', name))
        assert ex['image'].shape == img.shape
        assert (ex['height'], ex['width']) == img.shape[:2]
        bbox, attrs = _expected(ann, ex['width'], ex['height'])
        np.testing.assert_allclose(ex['faces']['bbox'], bbox.reshape(-1, 4), atol=1e-6)
        for col, attr in enumerate(wider.ATTRIBUTE_NAMES):
            np.testing.assert_array_equal(ex['faces'][attr], attrs[:, col])
    assert seen == set(by_name)


def test_jpeg_bytes_kept_as_on_disk(folder):
    root, anns, data_dir = folder
    for ex in tfds_wider.load(root, 'val', data_dir, decode_image=False).as_numpy_iterator():
        path = os.path.join(root, 'WIDER_val', 'images', ex['image/filename'].decode())
        with open(path, 'rb') as f:
            assert ex['image'] == f.read()


def test_val_alias_and_slices(folder):
    root, anns, data_dir = folder
    assert len(list(tfds_wider.load(root, 'val', data_dir))) == len(anns['val'])
    assert len(list(tfds_wider.load(root, 'validation[:2]', data_dir))) == 2


def test_edited_or_other_folder_gets_its_own_config(folder, tmp_path):
    root, anns, data_dir = folder
    name = tfds_wider.config_name(root)
    assert name == tfds_wider.config_name(root)  # Stable.
    copy = str(tmp_path / 'wider')
    shutil.copytree(root, copy)
    assert tfds_wider.config_name(copy) != name  # Another folder.
    before = tfds_wider.config_name(copy)
    edited = [wider.ImageAnnotation(a.name, a.boxes[:1], a.attributes[:1]) for a in anns['train']]
    txt, _ = wider.split_paths(copy, 'train')
    wider.write_bbx_gt(txt, edited)
    assert tfds_wider.config_name(copy) != before  # Edited annotations.
    after_txt = tfds_wider.config_name(copy)
    img = os.path.join(copy, 'WIDER_train', 'images', anns['train'][0].name)
    with open(img, 'ab') as f:
        f.write(b'\0')  # Rewritten image bytes.
    assert tfds_wider.config_name(copy) != after_txt
    b = tfds_wider.prepare(copy, data_dir)
    assert b.data_dir != tfds_wider.builder(root, data_dir).data_dir
    ex = next(iter(tfds_wider.load(copy, 'train', data_dir)))
    assert ex['faces']['bbox'].shape[0] <= 1


def test_missing_train_image_names_the_file(tmp_path):
    root = str(tmp_path / 'wider')
    anns = make_wider(root, n_train=3, n_val=0)
    os.remove(os.path.join(root, 'WIDER_train', 'images', anns['train'][2].name))
    with pytest.raises(FileNotFoundError, match=anns['train'][2].name):
        tfds_wider.prepare(root, str(tmp_path / 'data_dir'))


def test_empty_split_is_absent(tmp_path):
    root = str(tmp_path / 'wider')
    make_wider(root, n_train=2, n_val=0)
    b = tfds_wider.prepare(root, str(tmp_path / 'data_dir'))
    assert list(b.info.splits) == ['train']
    with pytest.raises(ValueError, match='no .val. split'):
        tfds_wider.load(root, 'val', str(tmp_path / 'data_dir'))


def test_jpeg_size_reads_the_header(tmp_path):
    rng = np.random.default_rng(1)
    for h, w in ((17, 33), (480, 640), (1000, 3)):
        ok, buf = cv2.imencode('.jpg', rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert tfds_wider.jpeg_size(buf.tobytes()) == (w, h)
    ok, buf = cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match='x.png: not a JPEG'):
        tfds_wider.jpeg_size(buf.tobytes(), 'x.png')
    ok, buf = cv2.imencode('.jpg', rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match='t.jpg: corrupt or truncated'):
        tfds_wider.jpeg_size(buf.tobytes()[: len(buf) // 2], 't.jpg')


def test_default_data_dir_is_a_user_cache_not_beside_the_dataset(folder, monkeypatch, tmp_path):
    root, _, _ = folder
    parent = os.path.dirname(os.path.realpath(root))
    monkeypatch.delenv('SAFEFAKES_TFDS_DIR', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert tfds_wider.default_data_dir() == str(tmp_path / 'xdg' / 'safefakes_jax' / 'tfds')
    for xdg in ('', 'relative/cache'):  # Unset or not absolute (XDG spec): ~/.cache.
        monkeypatch.setenv('XDG_CACHE_HOME', xdg)
        monkeypatch.setenv('HOME', str(tmp_path / 'home'))
        assert tfds_wider.default_data_dir() == str(
            tmp_path / 'home' / '.cache' / 'safefakes_jax' / 'tfds'
        )
    default = os.path.realpath(os.fspath(tfds_wider.builder(root).data_dir_root))
    assert os.path.commonpath([default, parent]) != parent  # Not beside the dataset.
    monkeypatch.setenv('SAFEFAKES_TFDS_DIR', str(tmp_path / 'somewhere'))
    assert tfds_wider.default_data_dir() == str(tmp_path / 'somewhere')
    assert os.fspath(tfds_wider.builder(root).data_dir_root) == str(tmp_path / 'somewhere')
    given = tfds_wider.builder(root, str(tmp_path / 'given')).data_dir_root
    assert os.fspath(given) == str(tmp_path / 'given')


def test_prepare_logs_the_location_and_warns_about_an_old_cache(tmp_path, monkeypatch, caplog):
    root = str(tmp_path / 'wider')
    make_wider(root, n_train=2, n_val=0)
    (tmp_path / '.tfds').mkdir()  # What older versions wrote beside the dataset folders.
    monkeypatch.setenv('SAFEFAKES_TFDS_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(tfds_wider, '_WARNED_LEFTOVERS', set())
    with caplog.at_level('INFO'):
        b = tfds_wider.prepare(root)
        tfds_wider.prepare(root)  # Prepared already: no second line.
    preparing = [r for r in caplog.records if 'Preparing the TFDS records' in r.getMessage()]
    assert len(preparing) == 1 and str(tmp_path / 'cache') in preparing[0].getMessage()
    old = [r for r in caplog.records if 'TFDS cache of an older version' in r.getMessage()]
    assert len(old) == 1 and str(tmp_path / '.tfds') in old[0].getMessage()
    assert os.fspath(b.data_dir).startswith(str(tmp_path / 'cache'))
    assert os.listdir(tmp_path / '.tfds') == []  # Nothing is written beside the folder.


def test_annotation_naming_a_file_outside_is_refused_before_preparing(tmp_path):
    root = str(tmp_path / 'wider')
    anns = make_wider(root, n_train=3, n_val=0)
    cv2.imwrite(
        str(tmp_path / 'wider' / 'WIDER_train' / 'outside.jpg'), np.zeros((40, 40, 3), np.uint8)
    )
    txt, _ = wider.split_paths(root, 'train')
    escaped = [anns['train'][0], wider.ImageAnnotation('../outside.jpg', [[1, 1, 9, 9]], [[0] * 6])]
    wider.write_bbx_gt(txt, escaped)
    line = wider.format_bbx_gt(escaped[:1]).count('\n') + 1
    data_dir = tmp_path / 'data_dir'
    # wider.read_bbx_gt: a FormatError (a ValueError, like PathEscapeError) with file:line.
    with pytest.raises(ValueError, match=rf'wider_face_train_bbx_gt.txt:{line}: .\.\./outside.jpg'):
        tfds_wider.prepare(root, str(data_dir))
    assert not data_dir.exists()  # Refused before TFDS created anything.


def test_image_symlinked_out_of_the_folder_is_refused_before_preparing(tmp_path):
    from safefakes_jax.data import root_paths

    root = str(tmp_path / 'wider')
    anns = make_wider(root, n_train=3, n_val=0)
    secret = tmp_path / 'secret.jpg'
    cv2.imwrite(str(secret), np.zeros((40, 40, 3), np.uint8))
    image = os.path.join(root, 'WIDER_train', 'images', anns['train'][2].name)
    os.remove(image)
    os.symlink(secret, image)
    line = wider.format_bbx_gt(anns['train'][:2]).count('\n') + 1
    data_dir = tmp_path / 'data_dir'
    with pytest.raises(
        root_paths.PathEscapeError,
        match=rf'bbx_gt.txt:{line}: .{anns["train"][2].name}. resolves to '
        r'.*secret.jpg, outside',
    ):
        tfds_wider.prepare(root, str(data_dir))
    assert not data_dir.exists()  # Refused before TFDS created anything.
