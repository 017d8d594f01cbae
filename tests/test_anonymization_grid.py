"""Tests for tools/anonymization_grid.py: the before/after picture and its refusals."""

import os
import sys

import cv2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tools'))

import anonymization_grid  # noqa: E402

from safefakes_jax.data import synthetic  # noqa: E402
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
