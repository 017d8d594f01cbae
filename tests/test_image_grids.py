"""Tests for image grids and box drawing."""

import cv2
import numpy as np
import pytest

from safefakes_jax.evaluation import image_grids


def test_draw_boxes_outline_only():
    image = np.zeros((20, 30, 3), np.uint8)
    out = image_grids.draw_boxes(image, [[2, 3, 10, 12]], color=(255, 0, 0))
    assert image.sum() == 0  # Input untouched.
    assert tuple(out[3, 5]) == (255, 0, 0) and tuple(out[12, 10]) == (255, 0, 0)
    assert out[7, 6].sum() == 0  # Inside stays as it was.


def test_tile_layout_and_errors(tmp_path):
    ims = [np.full((4, 5, 3), k * 40, np.uint8) for k in range(5)]
    grid = image_grids.tile(ims, cols=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1 + 5, 1 + 6, 0] == 160
    assert grid[1 + 5, 1 + 2 * 6, 0] == 255  # Empty cell stays white.
    with pytest.raises(ValueError, match='image 1 has shape'):
        image_grids.tile([ims[0], np.zeros((3, 3, 3), np.uint8)])
    path = str(tmp_path / 'g.png')
    image_grids.save_png(path, grid)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), grid)
