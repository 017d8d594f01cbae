"""DSFD anchors (priors), following yxlijun/DSFD.pytorch `layers/functions/prior_box.py`.

One anchor per feature-map cell (per aspect ratio), in normalised (cx, cy, w, h):

    cx = (j + .5) / (W / step),  cy = (i + .5) / (H / step),  w = size / W,  h = size / H

with cells row-major (i = row, j = column) inside a level and the levels concatenated from the
finest (stride 4) to the coarsest (stride 128). This is the order in which the heads flatten
their NHWC outputs, so anchor k pairs with prediction k. `CLIP=False` as in yx: anchors may
extend past the image.

Feature-map sizes. yx builds the priors from the *actual* head map sizes. For a 640 input every
stride-2 stage halves exactly (160, 80, 40, 20, 10, 5 -> 34,125 anchors). For sides that are not
multiples of 128 the sizes depend on the rounding of each stride-2 stage, so two rules exist
(see `feature_map_sizes`):

* `'ceil'` (default): every stride-2 stage rounds up, as a max-pool or stride-2 conv with SAME
  padding does in Flax (and as torch's `ceil_mode=True` / 3x3 pad-1 stride-2 conv do). Iterated
  ceil-halving equals `ceil(side / step)`, so the map at stride s is `ceil(side / s)`.
* `'torch'`: the exact yx VGG rounding: pool1, pool2 floor; pool3 ceil (`'C'`, ceil_mode);
  pool4, pool5 floor; the two stride-2 extras (3x3, pad 1) ceil.

The Flax model must use the same rule as the anchors; `anchor_boxes` also takes the map sizes
directly (`feature_maps=`) so a caller can pass the shapes the model produced.

Deviations from yx:
* `aspect_ratio` is one float (yx takes a list; DSFD uses `[1.0]`). Our reading of the paper's
  "1.5:1" (and TC's 1.5) is a *tall* anchor of the same area as the square one:
  `w = size / sqrt(r)`, `h = size * sqrt(r)`, i.e. h = 1.5 w. This is also what yx's formula
  `[cx, cy, s_kw / sqrt(ar), s_kh * sqrt(ar)]` gives for `ASPECT_RATIO = [1.5]`.
* numpy float32 output instead of a torch tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from safefakes_jax.models import dsfd

STEPS = (4, 8, 16, 32, 64, 128)
SIZES = (16, 32, 64, 128, 256, 512)  # Second shot (yx ANCHOR_SIZES2).


def _hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def first_shot_sizes(sizes: Sequence[float] = SIZES) -> tuple[float, ...]:
    """Anchor sizes of the first shot: half those of the second (paper; yx ANCHOR_SIZES1).

    Args:
        sizes: second-shot anchor sizes in pixels.

    Returns:
        The halved sizes as floats, e.g. (8., 16., 32., 64., 128., 256.) for the defaults.
    """
    return tuple(s / 2 for s in sizes)


def feature_map_sizes(
    image_size: int | tuple[int, int], steps: Sequence[int] = STEPS, rule: str = 'ceil'
) -> list[tuple[int, int]]:
    """(height, width) of each head map of the VGG16 DSFD for an input of `image_size`.

    Args:
        image_size: side, or (height, width), of the network input in pixels.
        steps: strides of the levels; `'torch'` requires the default DSFD strides.
        rule: `'ceil'` (every stride-2 stage rounds up: `ceil(side / step)`) or `'torch'`
            (the yx VGG rounding; see the module docstring).

    Returns:
        One (height, width) pair per level.
    """
    h, w = _hw(image_size)
    if rule == 'ceil':
        return [(math.ceil(h / s), math.ceil(w / s)) for s in steps]
    if rule != 'torch':
        raise ValueError(f"rule must be 'ceil' or 'torch', got {rule!r}")
    if tuple(steps) != STEPS:
        raise ValueError(f"rule='torch' is defined for steps {STEPS} only, got {tuple(steps)}")

    def torch_side(n: int) -> list[int]:
        n = n // 2  # pool1 (floor)
        n = n // 2  # pool2 (floor) -> stride 4
        out = [n]
        n = -(-n // 2)  # pool3, ceil_mode -> stride 8
        out.append(n)
        n = n // 2  # pool4 -> stride 16
        out.append(n)
        n = n // 2  # pool5 -> stride 32 (conv6 dilated, pad 3, keeps the size)
        out.append(n)
        for _ in range(2):  # extras 3x3 s2 p1: floor((n - 1) / 2) + 1 = ceil(n / 2)
            n = -(-n // 2)
            out.append(n)
        return out

    return list(zip(torch_side(h), torch_side(w), strict=True))


def anchor_boxes(
    image_size: int | tuple[int, int],
    steps: Sequence[int] = STEPS,
    sizes: Sequence[float] = SIZES,
    aspect_ratio: float = 1.0,
    feature_maps: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """All anchors of one shot, normalised (cx, cy, w, h), like yx `PriorBox.forward`.

    Args:
        image_size: side, or (height, width), of the network input in pixels.
        steps: stride of each level.
        sizes: anchor side of each level in pixels (use `first_shot_sizes` for shot 1).
        aspect_ratio: height / width of the anchor at the same area as the square one
            (1.0 in yx; 1.5 for the paper's tall anchors).
        feature_maps: (height, width) of each head map; default `ceil(side / step)`.

    Returns:
        float32 [A, 4] with A = sum of map cells (34,125 at 640 with the defaults).
    """
    h, w = _hw(image_size)
    if len(steps) != len(sizes):
        raise ValueError(f'{len(steps)} steps but {len(sizes)} sizes')
    if feature_maps is None:
        feature_maps = feature_map_sizes((h, w), steps)
    if len(feature_maps) != len(steps):
        raise ValueError(f'{len(feature_maps)} feature maps but {len(steps)} steps')
    r = math.sqrt(aspect_ratio)
    levels = []
    for (fh, fw), step, size in zip(feature_maps, steps, sizes, strict=True):
        # yx divides by H / step (not by the map size), so centres sit at (j + .5) * step px.
        cy, cx = np.meshgrid(
            (np.arange(fh) + 0.5) * step / h, (np.arange(fw) + 0.5) * step / w, indexing='ij'
        )
        wh = np.broadcast_to([size / w / r, size / h * r], (fh * fw, 2))
        levels.append(np.concatenate([cx.reshape(-1, 1), cy.reshape(-1, 1), wh], axis=1))
    return np.concatenate(levels, axis=0).astype(np.float32)


def shot_anchors(image_size: int, aspect_ratio: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(first-shot, second-shot) anchors [A, 4] normalised cx cy w h, matching `dsfd.DSFD`."""
    maps = dsfd.feature_map_sizes(image_size, image_size)
    second = anchor_boxes(image_size, sizes=SIZES, aspect_ratio=aspect_ratio, feature_maps=maps)
    first = anchor_boxes(
        image_size, sizes=first_shot_sizes(), aspect_ratio=aspect_ratio, feature_maps=maps
    )
    return first, second
