"""Tests for tools/anonymization_grid.py: the before/after pictures (from copies, and on the
fly as the paper's Fig. 1) and their refusals."""

import os
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tools'))

import anonymization_grid  # noqa: E402

from safefakes_jax.data import face_crops, synthetic  # noqa: E402
from safefakes_jax.evaluation import image_grids  # noqa: E402
from safefakes_jax.models import deepprivacy, torch_import  # noqa: E402
from tests import folders  # noqa: E402


def test_grid_has_a_column_per_copy_and_refuses_a_missing_copy(tmp_path, capsys):
    src, dst = tmp_path / 'wider', tmp_path / 'wider_blackout'
    synthetic.generate(src, 3, 0, seed=0, workers=1, progress=False, width=320)
    folders.anonymized_copy(src, dst, name='blackout')
    out = tmp_path / 'grid.png'
    args = ['--orig', str(src), '--anon', str(dst), '--images', '2', '--width', '100']
    assert anonymization_grid.main([*args, '--out', str(out)]) == 0
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 2 * 100 + 3 * 2  # Two columns and their gaps.
    # --faces: one row per face, the blacked-out copy black in the middle of each face.
    faces = tmp_path / 'faces.png'
    assert (
        anonymization_grid.main([*args, '--faces', '3', '--face_size', '64', '--out', str(faces)])
        == 0
    )
    tiles = cv2.imread(str(faces))
    assert tiles.shape[:2] == (22 + 3 * 64 + 4 * 2, 2 * 64 + 3 * 2)  # Titles, 3 rows, 2 columns.
    for r in range(3):
        top = 22 + 2 + r * 66
        original, copy = tiles[top + 32, 2 + 32], tiles[top + 32, 2 + 66 + 32]
        assert (copy == 0).all() and original.any()
    assert (
        anonymization_grid.main(
            ['--orig', str(src), '--anon', str(tmp_path / 'none'), '--out', str(out)]
        )
        == 2
    )
    assert 'not found' in capsys.readouterr().err


# --------------------------------------------------------------------------- on the fly (Fig. 1)

CONVENTIONAL = ['blur', 'pixelate', 'blackout', 'fullblur']


@pytest.fixture(scope='module')
def wider_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('scene') / 'wider'
    synthetic.generate(root, 3, 0, seed=0, workers=1, progress=False, width=320)
    return root


@pytest.fixture(scope='module')
def deepprivacy_dir(tmp_path_factory):
    """Tiny random DeepPrivacy weights (16 px; for shapes, not looks)."""
    path = tmp_path_factory.mktemp('gen') / 'generator'
    model = deepprivacy.Generator(width=0.03125, resolution=16)
    params = model.init(
        jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.full((1, 7, 2), jnp.nan),
        jnp.zeros((1, 4, 4, 32)),
    )['params']  # fmt: skip
    info = {'format': 'deepprivacy', 'width': 0.03125, 'resolution': 16}
    torch_import.save_converted(path, jax.device_get(params), info)
    return str(path)


def test_scene_is_anonymized_by_every_method_and_missing_weights_are_grey(
    wider_root, deepprivacy_dir, tmp_path, capsys
):
    scene = anonymization_grid.synthetic_scene(str(wider_root))
    assert scene.keypoints is not None and len(scene.keypoints) == len(scene.boxes)
    methods = ['original', *CONVENTIONAL, 'deepprivacy', 'ciagan']
    weights = {'deepprivacy': deepprivacy_dir, 'ciagan': str(tmp_path / 'no_ciagan')}
    cells = anonymization_grid.anonymize_scene(scene, methods, weights=weights)
    assert [c.method for c in cells] == methods
    np.testing.assert_array_equal(cells[0].image, scene.image)
    large = [b for b in scene.boxes if b[2] >= 16 and b[3] >= 16]
    assert large
    for cell in cells[1:-1]:
        assert cell.image.shape == scene.image.shape, cell.method
        for x, y, w, h in large:
            inside = (slice(max(y, 0), y + h), slice(max(x, 0), x + w))
            assert not np.array_equal(cell.image[inside], scene.image[inside]), cell.method
    assert cells[-1].image is None and 'no_ciagan' in cells[-1].missing
    # The same through the command line: one column per method, a warning naming ciagan.
    out = tmp_path / 'methods.png'
    args = ['--scene', str(wider_root), '--width', '160', '--face_size', '64', '--out', str(out)]
    args += [a for m in methods for a in ('--method', m)]
    args += ['--weights', f'deepprivacy={deepprivacy_dir}', '--weights', f'ciagan={tmp_path}/x']
    assert anonymization_grid.main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no weights for ciagan' in err[0], err
    picture = cv2.imread(str(out))
    height = round(scene.image.shape[0] * 160 / scene.image.shape[1])
    assert picture.shape == (22 + 2 + height + 2 + 64 + 2, len(methods) * 162 + 2, 3)
    grey = picture[22 + 2 + height // 4, -1 - 162 // 2]  # Middle of the ciagan column's scene.
    assert (grey >= 120).all() and (grey <= 136).all()


def test_scene_picture_marks_the_largest_face_and_keeps_the_original(wider_root):
    scene = anonymization_grid.synthetic_scene(str(wider_root))
    cells = [anonymization_grid.Cell('original', scene.image)]
    width = scene.image.shape[1]  # No resize: the cell is the image but for the mark.
    picture = anonymization_grid.scene_picture(cells, scene.boxes, width, face_size=50)
    h = scene.image.shape[0]
    cell = picture[24 : 24 + h, 2 : 2 + width]
    changed = (cell != scene.image).any(axis=-1)
    crop = face_crops.crop_box(anonymization_grid.largest_box(scene.boxes))
    mark = image_grids.draw_boxes(np.zeros_like(scene.image), crop, (255, 0, 0), 2)
    assert changed.any() and not (changed & ~mark.any(axis=-1)).any()
    assert picture.shape[:2] == (24 + h + 2 + 50 + 2, width + 4)


def test_user_image_with_a_box_file_and_a_malformed_one(
    wider_root, deepprivacy_dir, tmp_path, capsys
):
    scene = anonymization_grid.synthetic_scene(str(wider_root))
    photo = tmp_path / 'photo.png'
    cv2.imwrite(str(photo), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    boxes = tmp_path / 'photo_boxes.txt'
    boxes.write_text(''.join(f'{x} {y} {w} {h}\n' for x, y, w, h in scene.boxes) + '\n')
    out = tmp_path / 'photo_methods.png'
    args = ['--image', str(photo), '--boxes', str(boxes), '--width', '120', '--out', str(out)]
    methods = ['--method', 'original', '--method', 'blackout', '--method', 'deepprivacy']
    weights = ['--weights', f'deepprivacy={deepprivacy_dir}']
    assert anonymization_grid.main([*args, *methods, *weights]) == 0
    assert cv2.imread(str(out)).shape[1] == 3 * 122 + 2
    assert capsys.readouterr().err == ''
    # The box file: 4 or 10 integers per row, else exit 2 naming the file and line.
    boxes.write_text('10 10 40 40\n12 20 30\n')
    assert anonymization_grid.main([*args, *methods[:4]]) == 2
    assert f'{boxes}:2' in capsys.readouterr().err
    boxes.write_text('10 10 40 40 0 0 0 0 0 0\n')
    assert anonymization_grid.main([*args, *methods[:4]]) == 0
    boxes.write_text('10 10 -4 40\n')
    assert anonymization_grid.main([*args, *methods[:4]]) == 2
    assert f'{boxes}:1' in capsys.readouterr().err
    boxes.write_text('10 10 40 40\n')
    assert anonymization_grid.main([*args, '--method', 'nonesuch']) == 2
    assert 'unknown method' in capsys.readouterr().err
