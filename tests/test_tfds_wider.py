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
            boxes = np.stack([rng.integers(0, w - 30, k), rng.integers(0, h - 30, k),
                              rng.integers(4, 30, k), rng.integers(4, 30, k)], -1)
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
        tfds_wider.jpeg_size(buf.tobytes()[:len(buf) // 2], 't.jpg')


def test_default_data_dir_is_beside_the_folder(folder, monkeypatch):
    root, _, _ = folder
    monkeypatch.delenv('SAFEFAKES_TFDS_DIR', raising=False)
    assert tfds_wider.default_data_dir(root) == os.path.join(os.path.dirname(root), '.tfds')
    monkeypatch.setenv('SAFEFAKES_TFDS_DIR', '/somewhere')
    assert tfds_wider.default_data_dir(root) == '/somewhere'
