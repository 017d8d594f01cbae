"""How much identity survives anonymization: dlib face-descriptor distances between original and
anonymized faces, re-identification against a gallery of originals, and FID-dlib.

The descriptor model, its alignment and its gates are the leak audit's
(`anonymizers.identity.IdentityModel`, one implementation for both): dlib's 128-d
face-recognition ResNet on the 150 x 150 chip aligned from 5 landmarks, same person below a
distance of 0.6. Both faces are aligned with the *original's* landmarks, so the same region is
compared (a black box has no landmarks of its own).

For every face at least `min_face_px` (40) wide that the copy did not skip (its manifest
record is not `skipped:*`; the others are left out and counted by reason, as in the image
metrics):

* `mean_distance` and `match_rate` (distance < 0.6) between a face and its own original;
* `rank1` / `rank5`: the share of anonymized faces whose own original is the nearest (among
  the 5 nearest) of the gallery of *all* original faces of the split, ties counted against;
* with identity labels (the synthetic set's sidecar `identity`), `rank1_identity`: the share
  whose nearest gallery face shows the same identity, in any image (the attack a dataset owner
  fears: finding the person, not the photo); the same rate of the originals against the
  gallery without themselves is `rank1_identity_original` (what the recogniser can do at all
  on these faces);
* `fid_dlib`: the Frechet distance between the original and the anonymized descriptors (128-d
  Gaussians), None below 2 faces.

Descriptors take ~0.08 s a face on one core; `embed_pairs` runs one image per task in a pool of
`workers` processes (each loads the model once).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial import distance

from safefakes_jax.anonymizers import identity as identity_model
from safefakes_jax.data import face_pairs, images
from safefakes_jax.evaluation import fid

MIN_FACE_PX = 40
MATCH_THRESHOLD = identity_model.MATCH_THRESHOLD


def _embed_task(task: tuple[face_pairs.ImagePair, list[int]]):
    pair, keep = task
    if not keep:
        return np.zeros((0, 128), np.float32), np.zeros((0, 128), np.float32)
    original = images.read(pair.orig_path)
    anonymized = images.read(pair.anon_path)
    boxes = [pair.boxes[k] for k in keep]
    return identity_model.load().descriptor_pairs(original, anonymized, boxes)


def embed_pairs(
    pairs: Sequence[face_pairs.ImagePair],
    min_face_px: int = MIN_FACE_PX,
    workers: int = 1,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], dict[str, int]]:
    """Descriptors of every measured face of `pairs` (module docstring).

    Args:
      pairs: image pairs (`face_pairs.pair_images(...).pairs`); a pair without its copy
        counts its faces as `missing`.
      min_face_px: the narrowest face measured.
      workers: processes (1: this one).
      progress: an optional callable called with the number of images done since last call.

    Returns:
      (original [N, 128], anonymized [N, 128], (pair index, face index) per row, skipped by
      reason).
    """
    tasks, rows, skipped = [], [], {}
    for i, pair in enumerate(pairs):
        why: dict[str, int] = {}
        keep = face_pairs.select_faces(pair, min_face_px, why)
        if keep and pair.anon_path is None:
            why['missing'] = why.get('missing', 0) + len(keep)
            keep = []
        for reason, n in why.items():
            skipped[reason] = skipped.get(reason, 0) + n
        tasks.append((pair, keep))
        rows += [(i, k) for k in keep]
    results = []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context('spawn').Pool(workers))
            done = pool.imap(_embed_task, tasks, chunksize=4)
        else:
            done = map(_embed_task, tasks)
        for r in done:
            results.append(r)
            if progress:
                progress(1)
    a = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 128), np.float32)
    b = np.concatenate([r[1] for r in results]) if results else np.zeros((0, 128), np.float32)
    return a, b, rows, skipped


def summarize(
    original: np.ndarray, anonymized: np.ndarray, identities: Sequence[int] | None = None
) -> dict[str, Any]:
    """The identity metrics (module docstring) of paired descriptors [N, 128]; row i of both is
    one face, the originals are the gallery. `identities`: a label per row, or None."""
    n = len(original)
    out: dict[str, Any] = {'faces': n}
    if n == 0:
        return out | {k: None for k in ('mean_distance', 'match_rate', 'rank1', 'rank5')}
    dist = np.linalg.norm(original - anonymized, axis=1)
    ranks = identity_model.gallery_ranks(anonymized, original, np.arange(n))
    out |= {
        'mean_distance': float(dist.mean()),
        'match_rate': float((dist < MATCH_THRESHOLD).mean()),
        'rank1': float((ranks <= 1).mean()),
        'rank5': float((ranks <= 5).mean()),
        'fid_dlib': fid.frechet_of_features(original, anonymized) if n >= 2 else None,
    }
    if identities is not None:
        ids = np.asarray(identities)
        d = distance.cdist(anonymized, original)
        out['rank1_identity'] = float((ids[d.argmin(axis=1)] == ids).mean())
        if n >= 2:
            d = distance.cdist(original, original)
            np.fill_diagonal(d, np.inf)
            out['rank1_identity_original'] = float((ids[d.argmin(axis=1)] == ids).mean())
    return out
