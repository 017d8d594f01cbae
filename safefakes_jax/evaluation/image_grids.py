"""Pictures for people: boxes drawn on images, and images tiled into one grid.

Used by `launch/inspect_data.py` (augmented training batches), and by the trainers' image
summaries (detections on val images, anonymized faces).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, color=(0, 255, 0), thickness: int = 1
) -> np.ndarray:
    """Returns a copy of `image` (uint8 HWC RGB) with `boxes` (`[N, 4]` x1 y1 x2 y2, pixels)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), color, thickness)
    return out


def tile(
    images: np.ndarray | list[np.ndarray], cols: int | None = None, pad: int = 2
) -> np.ndarray:
    """Tiles equally sized uint8 HWC images into one grid image (row-major, white gaps)."""
    images = [np.asarray(im, np.uint8) for im in images]
    if not images:
        raise ValueError('tile needs at least one image')
    h, w, c = images[0].shape
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for k, im in enumerate(images):
        if im.shape != (h, w, c):
            raise ValueError(f'image {k} has shape {im.shape}, expected {(h, w, c)}')
        r, q = divmod(k, cols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = im
    return grid


def add_column_labels(
    grid: np.ndarray, labels: list[str], cell_width: int, pad: int = 2, height: int = 22
) -> np.ndarray:
    """`grid` (from `tile`, cells `cell_width` wide) with a white strip of column titles on top."""
    strip = np.full((height, grid.shape[1], grid.shape[2]), 255, np.uint8)
    for q, label in enumerate(labels):
        x = pad + q * (cell_width + pad) + 4
        cv2.putText(strip, label, (x, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return np.concatenate([strip, grid])


def save_png(path: str, image: np.ndarray) -> None:
    """Writes an RGB uint8 image as PNG atomically."""
    from safefakes_jax.data import atomic_io

    ok, data = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f'{path}: PNG encoding failed')
    atomic_io.write_bytes(path, data.tobytes())
