"""Test helpers for folders on disk: read a whole tree, write a tiny WIDER-layout split, make an
anonymized copy of the train split."""

import os

import cv2
import numpy as np

from safefakes_jax.data import wider


def read_tree(root) -> dict[str, bytes]:
    """{path relative to `root`: bytes} of every file under `root`."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def write_wider_split(
    root, split: str, images: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
) -> list[wider.ImageAnnotation]:
    """Writes `(name, BGR image, x y w h boxes, attributes)` items as a WIDER split of `root`.

    Returns the annotations written to `wider_face_<split>_bbx_gt.txt`.
    """
    txt, images_dir = wider.split_paths(root, split)
    anns = []
    for name, image, boxes, attrs in images:
        path = os.path.join(images_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, image)
        anns.append(wider.ImageAnnotation(name, boxes, attrs))
    wider.write_bbx_gt(txt, anns)
    return anns


def anonymized_copy(src, dst, image_format: str = 'png', **anonymizer):
    """Anonymizes the train split of `src` into `dst` with one worker; returns the summary."""
    from safefakes_jax.anonymizers import engine

    config = {
        'anonymizer': anonymizer,
        'src': str(src),
        'dst': str(dst),
        'splits': ('train',),
        'workers': 1,
        'seed': 0,
        'image_format': image_format,
        'jpeg_quality': 95,
        'overwrite': False,
    }
    return engine.run(config, progress=False)
