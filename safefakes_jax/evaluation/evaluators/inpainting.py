"""`inpainting`: how well a GAN generator (DeepPrivacy, Sun2018) fills held-out face boxes.

On the first `num_faces` crops of the val split (`config.data`, the same source as training,
no augmentation), the network's EMA params generate the face with z = 0 (as at anonymization
time), and the evaluator reports

* `l1`: mean |generated - real| over the whole crop, in [0, 1] per channel (DeepPrivacy's L1
  metric: images in [0, 1], mean over pixels and channels);
* `l1_box`: the same inside the box only (the generated region);
* `l2`: the mean squared error over the whole crop, in [0, 1] units;

and an image `faces`: for `grid_faces` crops, rows of the condition (box zeroed) with the
keypoints drawn in, the generator's output pasted into the box, and the real crop.

Section keys (defaults in `DEFAULTS`): `num_faces`, `batch_size`, `grid_faces`, `network`.
Built once: the crops are read and batched, and the generate function compiled, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import jax
import numpy as np

from safefakes_jax.evaluation import image_grids
from safefakes_jax.evaluation.evaluators import Context, Result, generated_faces

DEFAULTS: dict[str, Any] = {
    'type': 'inpainting',
    'every_steps': 0,
    'final': False,
    'num_faces': 256,
    'batch_size': 64,
    'grid_faces': 8,
    'network': 'generator',
}
_KEYPOINT_COLOURS = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """A copy of `image` (uint8 HWC) with the normalised [7, 2] keypoints as dots (NaN: none);
    other point counts (Sun2018's 68 landmarks) are drawn 1 px, all in one colour."""
    out = np.ascontiguousarray(image).copy()
    size = out.shape[0]
    points = np.asarray(keypoints)
    if len(points) == len(_KEYPOINT_COLOURS):
        radius, colours = max(1, size // 48), _KEYPOINT_COLOURS
    else:
        radius, colours = 0, [(0, 255, 0)] * len(points)
    for (x, y), colour in zip(points, colours, strict=True):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(x * size), int(y * size)), radius, colour, -1)
    return out


class Evaluator:
    """Inpainting quality of `state.nets[network]` (module docstring)."""

    def __init__(self, name: str, section: Mapping[str, Any], context: Context):
        unknown = sorted(set(section) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f'config.evals.{name}: unknown keys {unknown} (known: {sorted(DEFAULTS)})'
            )
        o = DEFAULTS | dict(section)
        self.options = o
        self.name, self.every_steps, self.final = name, int(o['every_steps']), bool(o['final'])
        self.network = o['network']
        self.batches, self.generate, self.num_faces = generated_faces.build(
            context, self.network, int(o['num_faces']), int(o['batch_size'])
        )

    def run(self, state: Any, step: int) -> Result:
        params = state.nets[self.network].eval_params
        l1 = l1_box = l2 = 0.0
        pixels = box_pixels = 0.0
        grid_rows: list[list[np.ndarray]] = [[], [], []]
        for batch in self.batches:
            fake, real, mask, condition = jax.device_get(
                self.generate(params, batch['image'], batch['box'], batch['keypoints'])
            )
            valid = np.asarray(batch['valid'], bool)
            diff = np.abs(fake - real)[valid]
            m = mask[valid]
            l1 += float(diff.sum())
            l2 += float(np.square(diff).sum())
            pixels += diff.size
            l1_box += float((diff * m).sum())
            box_pixels += float(m.sum()) * 3
            want = int(self.options['grid_faces']) - len(grid_rows[0])
            for i in np.flatnonzero(valid)[: max(want, 0)]:
                cond = ((condition[i] + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
                pasted = np.where(mask[i] > 0, fake[i], real[i])
                grid_rows[0].append(draw_keypoints(cond, batch['keypoints'][i]))
                grid_rows[1].append((pasted * 255).round().astype(np.uint8))
                grid_rows[2].append((real[i] * 255).round().astype(np.uint8))
        scalars = {
            'l1': l1 / max(pixels, 1),
            'l1_box': l1_box / max(box_pixels, 1),
            'l2': l2 / max(pixels, 1),
            'faces': float(self.num_faces),
        }
        images = {}
        if grid_rows[0]:
            images['faces'] = image_grids.tile(
                grid_rows[0] + grid_rows[1] + grid_rows[2], cols=len(grid_rows[0])
            )
        results = {f'{self.name}_{k}': v for k, v in scalars.items()} if self.final else {}
        return Result(scalars, images, results)
