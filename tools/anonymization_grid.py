r"""A picture of scenes before and after anonymization: one row per image, the original first,
then each anonymized copy, with the annotated boxes drawn in (PNG); with `--faces K`, the K
largest faces instead, one row per face, cut with the GANs' context rule and enlarged.

  python tools/anonymization_grid.py --orig cache/synthetic_wider \
      --anon cache/synthetic_wider_blur --anon cache/synthetic_wider_deepprivacy \
      --images 4 --out cache/demo/anonymization_grid.png
  python tools/anonymization_grid.py --orig cache/synthetic_wider \
      --anon cache/synthetic_wider_deepprivacy --faces 6 --out cache/demo/faces.png

Copies are paired with the original by `safefakes_jax.data.face_pairs` (names confined to their
folders; a copy's missing image is drawn black). Images are those of the original's txt with
the most faces of at least `--min_face_px`, resized to `--width` pixels. `--no_boxes` leaves the
boxes out. Columns are titled with each copy's method label. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from safefakes_jax.data import face_crops, face_pairs, images  # noqa: E402
from safefakes_jax.evaluation import image_grids  # noqa: E402


def grid(
    orig: str,
    anons: list[str],
    split: str = 'train',
    n_images: int = 4,
    width: int = 480,
    min_face_px: int = 10,
    boxes: bool = True,
) -> np.ndarray:
    """The grid image (module docstring)."""
    pairings = [face_pairs.pair_images(orig, anon, split) for anon in anons]
    pairs = pairings[0].pairs
    faces = [sum(int(b[2]) >= min_face_px for b in p.boxes) for p in pairs]
    chosen = sorted(np.argsort(faces, kind='stable')[::-1][:n_images])
    cells = []
    for i in chosen:
        original = images.read(pairs[i].orig_path)
        row = [original]
        for pairing in pairings:
            path = pairing.pairs[i].anon_path
            row.append(images.read(path) if path else np.zeros_like(original))
        h, w = original.shape[:2]
        size = (width, max(1, round(h * width / w)))
        for image in row:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if boxes:
                xyxy = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in pairs[i].boxes])
                image = image_grids.draw_boxes(image, xyxy.reshape(-1, 4) * width / w)
            cells.append(image)
    heights = {c.shape[0] for c in cells}
    if len(heights) > 1:  # Images of different aspect: pad to the tallest.
        top = max(heights)
        cells = [np.pad(c, ((0, top - c.shape[0]), (0, 0), (0, 0))) for c in cells]
    picture = image_grids.tile(cells, cols=1 + len(anons))
    return image_grids.add_column_labels(picture, _labels(pairings), width)


def _labels(pairings) -> list[str]:
    return ['original'] + [p.pairs[0].method if p.pairs else '?' for p in pairings]


def face_grid(
    orig: str, anons: list[str], split: str = 'train', n_faces: int = 6, size: int = 128
) -> np.ndarray:
    """The `n_faces` largest faces (by box width), original and copies, `size` px each."""
    pairings = [face_pairs.pair_images(orig, anon, split) for anon in anons]
    pairs = pairings[0].pairs
    faces = sorted(
        ((-int(b[2]), i, k) for i, p in enumerate(pairs) for k, b in enumerate(p.boxes)),
    )[:n_faces]
    cells, decoded = [], {}

    def read(path):
        if path not in decoded:
            decoded[path] = images.read(path)
        return decoded[path]

    for _, i, k in faces:
        crop = face_crops.crop_box(pairs[i].boxes[k])
        original = read(pairs[i].orig_path)
        cells.append(face_crops.cut(original, crop, size))
        for pairing in pairings:
            path = pairing.pairs[i].anon_path
            copy = read(path) if path else np.zeros_like(original)
            cells.append(face_crops.cut(copy, crop, size))
    picture = image_grids.tile(cells, cols=1 + len(anons))
    return image_grids.add_column_labels(picture, _labels(pairings), size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--orig', required=True, help='original WIDER-layout folder')
    parser.add_argument('--anon', action='append', required=True, help='anonymized copy')
    parser.add_argument('--split', default='train')
    parser.add_argument('--images', type=int, default=4)
    parser.add_argument('--width', type=int, default=480)
    parser.add_argument('--min_face_px', type=int, default=10)
    parser.add_argument('--no_boxes', action='store_true')
    parser.add_argument('--faces', type=int, default=0, help='the K largest faces instead')
    parser.add_argument('--face_size', type=int, default=128, help='pixels per face (--faces)')
    parser.add_argument('--out', required=True, help='output PNG')
    args = parser.parse_args(argv)
    try:
        if args.faces:
            picture = face_grid(args.orig, args.anon, args.split, args.faces, args.face_size)
        else:
            picture = grid(
                args.orig,
                args.anon,
                args.split,
                args.images,
                args.width,
                args.min_face_px,
                not args.no_boxes,
            )
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    image_grids.save_png(args.out, picture)
    print(f'wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
