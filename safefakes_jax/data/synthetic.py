"""Synthetic WIDER FACE: procedural scenes written in the exact official layout.

Every image is a textured background (smooth noise, gradients, stripes) with non-face
distractors (ellipses, polygons, bars; some skin-coloured, so skin colour alone does not make
a face), then 0..20 people drawn far to near from the 68-point face model of
`synthetic_faces` (identity, expression, yaw / pitch / roll, optional body), each followed by
its own lighting change, blur and occluder, then sensor noise and JPEG (quality 90).

Output under `out_dir` (see `generate`):
  WIDER_{train,val}/images/<event>/<name>.jpg
  wider_face_split/wider_face_{train,val}_bbx_gt.txt
  eval_tools/ground_truth/wider_face_val.mat, wider_{easy,medium,hard}_val.mat
  landmarks/{train,val}.jsonl   one JSON object per image, in txt order (faces in row order):
      {"image", "width", "height", "faces": [{"box": [x, y, w, h], "landmarks68": [[x, y]...],
       "keypoints7": [[x, y, v]...], "identity", "yaw", "roll", "occlusion_fraction"}]}
  synthetic_info.json           seed, counts, identity pools and the rules below.

Coordinates are OpenCV pixel coordinates (pixel centres at integers). The box is the tight
integer box of the 68 landmarks and the forehead outline: x = floor(min x), w = ceil(max x) - x
(same for y), so every landmark lies inside [x, x + w] x [y, y + h]. keypoints7 are in the
DeepPrivacy / COCO order nose, left eye, right eye, left ear, right ear, left shoulder, right
shoulder, where "left" is the person's left (the image right of a frontal face); v = 1 visible,
v = 0 absent with x = y = 0 (an eye turned away by |yaw| > 60, an ear turned away or outside the
image, a shoulder without a drawn body or outside the image). yaw > 0 turns the face towards
the image right; roll > 0 is clockwise.

Attributes (WIDER columns), from what was drawn:
  blur: r = blur kernel size / face width (2 x face scale); 0 if no blur or r < 0.07, 1 if
    r < 0.18, else 2.
  expression: 1 for an exaggerated expression (mouth wide open, brows raised).
  illumination: 1 for an extreme lighting gain (< 0.45 or > 1.9).
  occlusion: f = occluded fraction of the face's own pixels inside its box, measured from an
    owner map after the whole scene is drawn (occluders, other people, foreground objects);
    0 if f < 0.1, 1 if f < 0.4, else 2.
  invalid: 1 if w < 4 or h < 4 or f > 0.75.
  pose: 1 if |yaw| > 45 or |roll| > 30 degrees.

Difficulty keep lists (nested easy <= medium <= hard; invalid faces are never kept):
  hard:   not invalid and h >= 10
  medium: hard and h >= 30 and blur < 2 and occlusion < 2
  easy:   medium and h >= 50 and blur == 0 and occlusion == 0

Identities: train faces use identities [0, n_train_ids), val faces [n_train_ids, n_train_ids +
n_val_ids) (disjoint pools, so identity metrics on val see unseen people); an identity's
parameters depend only on (seed, identity) and it recurs across images.

Determinism: image i of split s is drawn from `np.random.default_rng([seed, s, i])` (s = 0 train,
1 val) and nothing else, so the bytes do not depend on the worker count.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

from safefakes_jax.data import atomic_io, landmarks_sidecar, wider, wider_mat
from safefakes_jax.data.synthetic_scene import Config, RenderedImage, render_image

DIFFICULTY_RULE = (
    'hard: not invalid and h >= 10; medium: hard and h >= 30 and blur < 2 and '
    'occlusion < 2; easy: medium and h >= 50 and blur == 0 and occlusion == 0'
)


def difficulty_keep(boxes: np.ndarray, attributes: np.ndarray) -> dict[str, np.ndarray]:
    """0-based keep indices per setting for one image (`DIFFICULTY_RULE`)."""
    a = dict(zip(wider.ATTRIBUTE_NAMES, np.asarray(attributes).reshape(-1, 6).T, strict=True))
    h = np.asarray(boxes).reshape(-1, 4)[:, 3]
    hard = (a['invalid'] == 0) & (h >= 10)
    medium = hard & (h >= 30) & (a['blur'] < 2) & (a['occlusion'] < 2)
    easy = medium & (h >= 50) & (a['blur'] == 0) & (a['occlusion'] == 0)
    return {
        name: np.flatnonzero(m).astype(np.int64)
        for name, m in (('easy', easy), ('medium', medium), ('hard', hard))
    }


# --------------------------------------------------------------------------- dataset writing


def _render_task(task: tuple[Config, str, int, int, str]) -> RenderedImage:
    """Worker: draws one image, writes its JPEG atomically, returns its metadata."""
    cfg, split, index, n_images, out_dir = task
    img, rendered = render_image(cfg, split, index, n_images)
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise RuntimeError(f'JPEG encoding failed for {rendered.annotation.name}')
    atomic_io.write_bytes(
        os.path.join(out_dir, f'WIDER_{split}', 'images', rendered.annotation.name), buf.tobytes()
    )
    return rendered


def _init_worker() -> None:
    cv2.setNumThreads(1)  # One process per core; no nested thread pools.


def _split_summary(results: Sequence[RenderedImage], keep: dict | None) -> dict:
    attrs = np.concatenate(
        [r.annotation.attributes for r in results] or [np.zeros((0, 6), np.int32)]
    )
    ids = [f['identity'] for r in results for f in r.record['faces']]
    out = {
        'images': len(results),
        'faces': int(len(attrs)),
        'zero_face_images': sum(len(r.annotation.boxes) == 0 for r in results),
        'identities_used': len(set(ids)),
    }
    for col, name in enumerate(wider.ATTRIBUTE_NAMES):
        out[f'{name}_counts'] = np.bincount(
            attrs[:, col], minlength=3 if name in ('blur', 'occlusion') else 2
        ).tolist()
    if keep is not None:
        valid = int(np.sum(attrs[:, 3] == 0)) if len(attrs) else 0
        for setting in wider.SETTINGS:
            n = int(sum(len(k) for k in keep[setting]))
            out[f'{setting}_faces'] = n
            out[f'{setting}_fraction_of_valid'] = round(n / valid, 4) if valid else 0.0
    return out


def generate(
    out_dir: str | os.PathLike,
    n_train: int,
    n_val: int,
    seed: int = 0,
    workers: int | None = None,
    *,
    n_train_ids: int = 200,
    n_val_ids: int = 100,
    width: int = 1024,
    jpeg_quality: int = 90,
    progress: bool = True,
) -> dict:
    """Generates a synthetic WIDER FACE under `out_dir` (layout in the module docstring).

    Existing files of the same names are replaced (atomically); other files are left alone.

    Args:
      out_dir: output root.
      n_train: number of train images.
      n_val: number of val images.
      seed: the only source of randomness; the same seed gives the same bytes.
      workers: processes (default `os.cpu_count()`); 0 or 1 draws in this process. The output
        does not depend on it.
      n_train_ids: size of the train identity pool.
      n_val_ids: size of the (disjoint) val identity pool.
      width: image width (heights are 600..1000).
      jpeg_quality: JPEG quality.
      progress: show a tqdm progress bar.

    Returns:
      A summary: per split image / face counts, attribute histograms, keep-list sizes (val),
      and the wall time in seconds.
    """
    from tqdm import tqdm  # Optional at import time; only the generator needs it.

    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    cfg = Config(
        seed=seed,
        width=width,
        jpeg_quality=jpeg_quality,
        n_train_ids=n_train_ids,
        n_val_ids=n_val_ids,
    )
    workers = (os.cpu_count() or 1) if workers is None else workers
    counts = {'train': n_train, 'val': n_val}
    for split in counts:  # The layout exists even for an empty split.
        os.makedirs(os.path.join(out_dir, f'WIDER_{split}', 'images'), exist_ok=True)
    tasks = [(cfg, split, i, n, out_dir) for split, n in counts.items() for i in range(n)]
    bar = tqdm(total=len(tasks), desc='synthetic WIDER', unit='img', disable=not progress)
    results: list[RenderedImage] = []
    if workers <= 1 or len(tasks) <= 1:
        threads = cv2.getNumThreads()
        _init_worker()
        try:
            for task in tasks:
                results.append(_render_task(task))
                bar.update()
        finally:
            cv2.setNumThreads(threads)
    else:
        # Spawn: the caller may hold threads (JAX, TF) that make fork unsafe.
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
            for r in pool.imap(_render_task, tasks, chunksize=4):
                results.append(r)
                bar.update()
    bar.close()

    summary = {'out_dir': out_dir, 'seed': seed, 'splits': {}}
    for split in ('train', 'val'):
        part = results[:n_train] if split == 'train' else results[n_train:]
        anns = [r.annotation for r in part]
        wider.write_bbx_gt(
            os.path.join(out_dir, 'wider_face_split', f'wider_face_{split}_bbx_gt.txt'), anns
        )
        atomic_io.write_text(
            landmarks_sidecar.path(out_dir, split),
            ''.join(json.dumps(r.record, separators=(',', ':')) + '\n' for r in part),
        )
        keep = None
        if split == 'val':
            per_image = [difficulty_keep(a.boxes, a.attributes) for a in anns]
            keep = {s: [k[s] for k in per_image] for s in wider.SETTINGS}
            if anns:
                wider_mat.write_ground_truth(wider_mat.ground_truth_dir(out_dir), anns, keep)
        summary['splits'][split] = _split_summary(part, keep)
    first_val, last_val = cfg.identity_pool('val')
    info = {
        'generator': 'safefakes_jax.data.synthetic',
        'seed': seed,
        'image_width': width,
        'image_heights': [cfg.min_height, cfg.max_height],
        'jpeg_quality': jpeg_quality,
        'identity_pools': {'train': [0, n_train_ids], 'val': [first_val, last_val]},
        'difficulty_rule': DIFFICULTY_RULE,
        'attribute_rules': {
            'blur': 'r = kernel / (2 * face scale): 0 if r < 0.07, 1 if r < 0.18, else 2',
            'expression': '1 = exaggerated (mouth wide open, brows raised)',
            'illumination': '1 = lighting gain < 0.45 or > 1.9',
            'invalid': '1 = w < 4 or h < 4 or occluded fraction > 0.75',
            'occlusion': 'f = occluded fraction: 0 if f < 0.1, 1 if f < 0.4, else 2',
            'pose': '1 = |yaw| > 45 or |roll| > 30',
        },
        'keypoints7': list(landmarks_sidecar.KEYPOINT_NAMES),
        'left_right': "person's left (image right for a frontal face)",
        'splits': summary['splits'],
    }
    atomic_io.write_text(
        os.path.join(out_dir, 'synthetic_info.json'), json.dumps(info, indent=2) + '\n'
    )
    summary['seconds'] = round(time.perf_counter() - start, 2)
    return summary
