"""Near-copy variants of a WIDER-layout folder: what the leak audit must catch.

A copy in which every face box was only slightly altered is not anonymized, however many of its
pixels changed. `apply_variant` makes four such copies of an image's faces (every box, clipped
to the image), the audit's calibration set (`benchmarks/audit_calibration.py`, the tests):

* `reencode`: nothing changed; the image is only re-encoded (as every copy is);
* `bright6`: +6 grey levels on every channel (clipped to 0..255);
* `noise6`: +-6 noise: every pixel shifted by +6 or -6 grey levels (a uniformly random sign,
  the same on the three channels), so that its luma moves by 6, above the audit's tolerance
  of 4: every pixel "changed", nothing of the face did;
* `ring70`: the outer ring blacked out, the central 70% of the box's width and height (49% of
  its area) kept.

`write_copy` writes a WIDER-layout copy (images as JPEG quality 95, the engine's default, and
the same annotation txt) with any per-image transform, so that the audit can be run on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from safefakes_jax.anonymizers.audit_measures import clip_box
from safefakes_jax.data import atomic_io, images, root_paths, wider

VARIANTS = ('reencode', 'bright6', 'noise6', 'ring70')
RING_KEEP = 0.7  # Share of the box's width and height kept by `ring70`.
JPEG_QUALITY = 95

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def apply_variant(
    image: np.ndarray,
    boxes: Sequence[Sequence[int]],
    kind: str,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`image` (RGB uint8) with every box altered as `kind` says (module docstring).

    Args:
      image: RGB uint8 [H, W, 3]; not modified.
      boxes: WIDER `x y w h` boxes.
      kind: one of `VARIANTS`.
      rng: the noise generator of `noise6` (default: seed 0).

    Returns:
      The altered copy.
    """
    if kind not in VARIANTS:
        raise ValueError(f'unknown variant {kind!r}; one of {", ".join(VARIANTS)}')
    rng = rng if rng is not None else np.random.default_rng(0)
    out = image.astype(np.int16)
    height, width = image.shape[:2]
    for box in boxes:
        region = clip_box(box, height, width)
        if region is None or kind == 'reencode':
            continue
        if kind == 'bright6':
            out[region] += 6
        elif kind == 'noise6':
            signs = rng.integers(0, 2, out[region].shape[:2], dtype=np.int16) * 2 - 1
            out[region] += 6 * signs[..., None]
        else:
            x, y, w, h = (int(v) for v in box)
            dx, dy = round(w * (1 - RING_KEEP) / 2), round(h * (1 - RING_KEEP) / 2)
            centre = out[
                max(y + dy, 0) : max(y + h - dy, 0), max(x + dx, 0) : max(x + w - dx, 0)
            ].copy()
            out[region] = 0
            out[max(y + dy, 0) : max(y + h - dy, 0), max(x + dx, 0) : max(x + w - dx, 0)] = centre
    return np.clip(out, 0, 255).astype(np.uint8)


def variant_transform(kind: str) -> Transform:
    """The `write_copy` transform of variant `kind`."""
    if kind not in VARIANTS:
        raise ValueError(f'unknown variant {kind!r}; one of {", ".join(VARIANTS)}')
    return lambda image, boxes, rng: apply_variant(image, boxes, kind, rng)


def write_copy(
    orig: str | os.PathLike,
    dst: str | os.PathLike,
    transform: Transform,
    split: str = 'train',
    max_images: int | None = None,
    seed: int = 0,
) -> int:
    """Writes a WIDER-layout copy of `orig`'s `split`, every image through `transform`.

    Args:
      orig: the original WIDER-layout folder.
      dst: the copy (created; existing files are overwritten).
      transform: (RGB image, int [N, 4] boxes, rng) -> RGB image of the same shape.
      split: 'train' or 'val'.
      max_images: only the first this many images (the copy's txt lists those).
      seed: image i gets `np.random.default_rng([seed, i])`.

    Returns:
      The number of images written.
    """
    txt, src_images = wider.require_split(orig, split)
    annotations = wider.read_bbx_gt(txt, src_images, strict=True)[:max_images]
    dst_txt, dst_images = wider.split_paths(dst, split)
    for i, ann in enumerate(annotations):
        rgb = images.read(root_paths.resolve_inside(src_images, ann.name, f'{txt}:{ann.line}'))
        out = transform(rgb, ann.boxes, np.random.default_rng([seed, i]))
        path = os.path.join(dst_images, ann.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_io.write_bytes(path, images.encode(out, 'jpeg', jpeg_quality=JPEG_QUALITY))
    wider.write_bbx_gt(dst_txt, annotations)
    return len(annotations)
