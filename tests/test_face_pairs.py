"""Tests for `data/face_pairs.py`: aligned original / anonymized crops from two WIDER-layout
folders without the landmarks sidecar, faces left out by reason, batches, and hostile names."""

import collections
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from safefakes_jax.data import (
    face_crops,
    face_pairs,
    images,
    manifest,
    root_paths,
    synthetic,
    wider,
)


@pytest.fixture(scope='module')
def orig(tmp_path_factory):
    root = tmp_path_factory.mktemp('orig')
    synthetic.generate(root, 4, 0, seed=1, workers=1, progress=False, width=320)
    shutil.rmtree(root / 'landmarks')  # Pairs need only the images and the txt.
    return str(root)


def make_copy(orig: str, dst: str) -> list[wider.ImageAnnotation]:
    """A lossless PNG copy in which every face but the first of each image is inverted; the
    manifest marks face 1 of every image skipped and the last image failed (no file)."""
    txt, src_images = wider.split_paths(orig, 'train')
    dst_txt, dst_images = wider.split_paths(dst, 'train')
    anns = wider.read_bbx_gt(txt)
    out_anns, entries = [], []
    for n, ann in enumerate(anns):
        rgb = images.read(os.path.join(src_images, ann.name))
        for x, y, w, h in ann.boxes[1:]:
            rgb[max(y, 0) : y + h, max(x, 0) : x + w] = (
                255 - rgb[max(y, 0) : y + h, max(x, 0) : x + w]
            )
        name = os.path.splitext(ann.name)[0] + '.png'
        records = ['anonymized'] * len(ann.boxes)
        if len(records) > 1:
            records[1] = 'skipped:below_min_face_px'
        failed = n == len(anns) - 1
        if not failed:
            path = os.path.join(dst_images, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(images.encode(rgb, 'png'))
        out_anns.append(wider.ImageAnnotation(name, ann.boxes, ann.attributes))
        entries.append(
            {
                'split': 'train',
                'image': ann.name,
                'output': None if failed else name,
                'status': 'failed:test' if failed else 'ok',
                'faces': records,
                'method': 'invert',
                'config_hash': 'x',
            }
        )
    wider.write_bbx_gt(dst_txt, out_anns)
    with open(os.path.join(dst, manifest.MANIFEST), 'w') as f:
        f.write(''.join(json.dumps(e) + '\n' for e in entries))
    return anns


def test_crops_are_aligned_and_faces_left_out_by_reason(orig, tmp_path):
    anns = make_copy(orig, str(tmp_path / 'anon'))
    pairing = face_pairs.pair_images(orig, tmp_path / 'anon', 'train')
    assert [p.name for p in pairing.pairs] == [a.name for a in anns]
    assert pairing.pairs[-1].anon_path is None and pairing.pairs[0].method == 'invert'
    skipped: dict[str, int] = {}
    batches = list(
        face_pairs.iter_batches(pairing, size=32, batch_size=5, min_face_px=10, skipped=skipped)
    )
    assert [len(b) for b in batches[:-1]] == [5] * (len(batches) - 1)
    assert 1 <= len(batches[-1]) <= 5
    got = [(name, int(i)) for b in batches for name, i in zip(b.image, b.face_index, strict=True)]

    # What should be there, from the annotations alone.
    expected, small, record, missing = [], 0, 0, 0
    for n, ann in enumerate(anns):
        for i, (_, _, w, h) in enumerate(ann.boxes):
            if w < 10 or h <= 0:
                small += 1
            elif i == 1:
                record += 1
            elif n == len(anns) - 1:
                missing += 1
            else:
                expected.append((ann.name, i))
    assert got == expected and len(expected) > 5
    assert skipped == {
        k: v
        for k, v in (
            ('small', small),
            ('record:skipped:below_min_face_px', record),
            ('missing', missing),
        )
        if v
    }

    src = wider.split_paths(orig, 'train')[1]
    dst = wider.split_paths(str(tmp_path / 'anon'), 'train')[1]
    for b in batches:
        assert b.original.shape == b.anonymized.shape == (len(b), 32, 32, 3)
        assert b.original.dtype == np.uint8
        for k, (name, i) in enumerate(zip(b.image, b.face_index, strict=True)):
            ann = anns[[a.name for a in anns].index(name)]
            assert tuple(b.box[k]) == tuple(ann.boxes[i])
            square = face_crops.crop_box(ann.boxes[i])  # The same square from both images.
            np.testing.assert_array_equal(
                b.original[k], face_crops.cut(images.read(os.path.join(src, name)), square, 32)
            )
            copy = images.read(os.path.join(dst, os.path.splitext(name)[0] + '.png'))
            np.testing.assert_array_equal(b.anonymized[k], face_crops.cut(copy, square, 32))
            change = np.abs(b.anonymized[k][12:20, 12:20].astype(int) - b.original[k][12:20, 12:20])
            assert (change.mean() > 20) == (i > 0)  # Face 0 untouched, the others inverted.


def test_unreadable_and_resized_copies_are_counted_not_cropped(orig, tmp_path):
    anns = make_copy(orig, str(tmp_path / 'anon'))
    pairing = face_pairs.pair_images(orig, tmp_path / 'anon', 'train')
    counted: dict[str, int] = {}
    per_image = collections.Counter(
        n for b in face_pairs.iter_batches(pairing, skipped=counted) for n in b.image
    )
    first, second = [a for a in anns if per_image[a.name]][:2]
    images_dir = wider.split_paths(str(tmp_path / 'anon'), 'train')[1]
    with open(os.path.join(images_dir, os.path.splitext(first.name)[0] + '.png'), 'wb') as f:
        f.write(b'\x89PNG not really')
    path = os.path.join(images_dir, os.path.splitext(second.name)[0] + '.png')
    assert cv2.imwrite(path, cv2.imread(path)[::2, ::2])
    skipped: dict[str, int] = {}
    pairing = face_pairs.pair_images(orig, tmp_path / 'anon', 'train')
    names = {n for b in face_pairs.iter_batches(pairing, skipped=skipped) for n in b.image}
    assert not names & {first.name, second.name}
    assert skipped == counted | {
        'unreadable': per_image[first.name],
        'size_mismatch': per_image[second.name],
    }


def test_names_leaving_the_copy_are_refused_before_any_crop(orig, tmp_path):
    anns = make_copy(orig, str(tmp_path / 'anon'))
    dst_txt, dst_images = wider.split_paths(str(tmp_path / 'anon'), 'train')
    copy = os.path.join(dst_images, os.path.splitext(anns[0].name)[0] + '.png')
    os.remove(copy)  # The copy's image a symlink to the original: it resolves outside.
    os.symlink(os.path.join(wider.split_paths(orig, 'train')[1], anns[0].name), copy)
    with pytest.raises(root_paths.PathEscapeError, match=os.path.basename(dst_txt) + ':1'):
        face_pairs.pair_images(orig, tmp_path / 'anon', 'train')
    listed = [
        wider.ImageAnnotation(os.path.splitext(a.name)[0] + '.png', a.boxes, a.attributes)
        for a in anns
    ]
    wider.write_bbx_gt(
        dst_txt,
        [wider.ImageAnnotation('../../outside.png', anns[0].boxes, anns[0].attributes)]
        + listed[1:],
    )
    with pytest.raises(wider.FormatError, match=os.path.basename(dst_txt) + ':1'):
        face_pairs.pair_images(orig, tmp_path / 'anon', 'train')


def test_missing_folders_and_the_same_folder_are_refused(orig, tmp_path):
    with pytest.raises(face_pairs.PairInputError, match='anonymized folder not found'):
        face_pairs.pair_images(orig, tmp_path / 'nothing')
    with pytest.raises(face_pairs.PairInputError, match='same folder'):
        face_pairs.pair_images(orig, orig)
