"""The metrics of one anonymized set against its original: what `launch/metrics.py` computes.

Faces come from the shared face-pair reader (`data.face_pairs`): each face of the original's
split with its copy, both cut from the same square (the GANs' context rule) and resized to
`size` (128) x 128. Faces narrower than `min_face_px` (10) and faces the copy's manifest skipped
are left out and counted by reason. The two folders must hold the same set: an image whose
boxes differ between the two txts, an image of either txt missing from the other, or a missing
copy is a `SetMismatchError` naming the first such image, before anything is computed.

Metrics (`METRICS`, each optional):
* `l1`, `l2`, `psnr`, `ssim`, `lpips` (alex): per face (`image_metrics`), then the mean over
  faces (PSNR over the faces that changed; identical ones are counted apart, their PSNR is
  infinite);
* `fid`: FID of the two sets of crops with the FID Inception (`evaluation.fid`); None, with
  the import command under `unavailable`, when its weights are not there;
* `fid_dlib` and `identity`: from dlib descriptors of the faces at least `identity_min_px` (40)
  wide (`evaluation.identity`); with the synthetic set's sidecar, identity labels too.

Batches have one fixed size (the last one padded), so each metric compiles once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from safefakes_jax.data import face_pairs, landmarks_sidecar, wider
from safefakes_jax.evaluation import fid as fid_lib
from safefakes_jax.evaluation import identity, image_metrics

PAIRWISE = ('l1', 'l2', 'psnr', 'ssim', 'lpips')
METRICS = (*PAIRWISE, 'fid', 'fid_dlib', 'identity')


class SetMismatchError(ValueError):
    """The original and the anonymized folder do not hold the same images and boxes."""


def check_same_set(pairing: face_pairs.Pairing, anon: str) -> None:
    """Raises SetMismatchError when the pairing is not one image set (module docstring)."""
    counts = pairing.counts
    if counts.get('annotation_mismatch'):
        raise SetMismatchError(
            f'{counts["annotation_mismatch"]} images have other boxes in {anon} than in the '
            'original (not a copy of this set)'
        )
    missing = [p.name for p in pairing.pairs if p.anon_path is None]
    if missing:
        raise SetMismatchError(
            f'{len(missing)} images have no copy in {anon} (first: {missing[0]})'
        )
    if counts.get('copies_not_in_original'):
        raise SetMismatchError(
            f'{counts["copies_not_in_original"]} images of {anon} are not in the original'
        )


def _pairwise(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if name == 'lpips':
        return np.asarray(image_metrics.lpips(a, b, net='alex'))
    return np.asarray(getattr(image_metrics, name)(a, b))


def _identities(orig: str, split: str, pairs, rows) -> list[int] | None:
    """The sidecar's identity label of each measured face, or None without labels."""
    path = landmarks_sidecar.path(orig, split)
    if not os.path.isfile(path):
        return None
    by_name = {record['image']: record['faces'] for _, record in landmarks_sidecar.read(path)}
    labels = []
    for i, k in rows:
        faces = by_name.get(pairs[i].name) or []
        label = faces[k].get('identity') if k < len(faces) else None
        if not isinstance(label, int) or isinstance(label, bool):
            return None
        labels.append(label)
    return labels


def compute(
    orig: str,
    anon: str,
    split: str = 'train',
    metrics: Sequence[str] = METRICS,
    size: int = 128,
    batch_size: int = 64,
    min_face_px: int = 10,
    identity_min_px: int = identity.MIN_FACE_PX,
    fid_weights: str = fid_lib.DEFAULT_WEIGHTS,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """The metrics of `anon` against `orig` (module docstring) as a JSON-ready dict.

    Raises:
      ValueError: an unknown metric; SetMismatchError: not one image set;
      face_pairs.PairInputError / wider.FormatError / root_paths.PathEscapeError: bad folders.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f'unknown metrics {unknown}; known: {", ".join(METRICS)}')
    if split not in wider.SPLITS:
        raise ValueError(f'split must be one of {wider.SPLITS}, got {split!r}')
    pairing = face_pairs.pair_images(orig, anon, split)
    check_same_set(pairing, anon)
    methods = sorted({p.method for p in pairing.pairs})
    out: dict[str, Any] = {
        'orig': os.path.abspath(orig),
        'anon': os.path.abspath(anon),
        'split': split,
        'method': methods[0] if len(methods) == 1 else methods,
        'crop_size': size,
        'min_face_px': min_face_px,
        'metrics': {},
        'unavailable': {},
        'warnings': pairing.warnings,
    }
    features = None
    if 'fid' in metrics:
        try:
            features = fid_lib.load(fid_weights)
        except fid_lib.FIDUnavailableError as e:
            out['metrics']['fid'], out['unavailable']['fid'] = None, str(e)
    pairwise = [m for m in PAIRWISE if m in metrics]
    if pairwise or features is not None:
        values, out['faces'], out['skipped'] = _crop_metrics(
            pairing, pairwise, features, size, batch_size, min_face_px, progress
        )
        out['metrics'].update(values)
    if 'identity' in metrics or 'fid_dlib' in metrics:
        bar = tqdm.tqdm(total=len(pairing.pairs), desc='identity', unit='img', disable=not progress)
        with bar:
            a, b, rows, skipped = identity.embed_pairs(
                pairing.pairs, identity_min_px, workers, bar.update
            )
        summary = identity.summarize(a, b, _identities(orig, split, pairing.pairs, rows))
        summary['skipped'] = skipped
        summary['min_face_px'] = identity_min_px
        if 'fid_dlib' in metrics:
            out['metrics']['fid_dlib'] = summary['fid_dlib']
        if 'identity' in metrics:
            out['metrics']['identity'] = summary
    return out


def _crop_metrics(pairing, pairwise, features, size, batch_size, min_face_px, progress):
    """(the per-face metrics' means and FID, faces measured, faces skipped by reason)."""
    skipped: dict[str, int] = {}
    values: dict[str, list[np.ndarray]] = {m: [] for m in pairwise}
    feats: tuple[list, list] = ([], [])
    faces = 0
    total = sum(sum(b[2] >= min_face_px for b in p.boxes) for p in pairing.pairs)
    bar = tqdm.tqdm(total=total, desc='image metrics', unit='face', disable=not progress)
    with bar:
        for batch in face_pairs.iter_batches(pairing, size, batch_size, min_face_px, skipped):
            n = len(batch)
            pad = ((0, batch_size - n), (0, 0), (0, 0), (0, 0))  # One shape: one compilation.
            a = np.pad(batch.original, pad).astype(np.float32) / 255.0
            b = np.pad(batch.anonymized, pad).astype(np.float32) / 255.0
            for name in pairwise:
                values[name].append(_pairwise(name, a, b)[:n])
            if features is not None:
                feats[0].append(features(a)[:n])
                feats[1].append(features(b)[:n])
            bar.update(n)
            faces += n
    result: dict[str, Any] = {}
    for name in pairwise:
        v = np.concatenate(values[name]) if values[name] else np.zeros(0)
        if name == 'psnr':
            finite = v[np.isfinite(v)]
            result['psnr'] = float(finite.mean()) if finite.size else None
            result['psnr_identical_faces'] = int((~np.isfinite(v)).sum())
        else:
            result[name] = float(v.mean()) if v.size else None
    if features is not None:
        f1 = np.concatenate(feats[0]) if feats[0] else np.zeros((0, 2048))
        f2 = np.concatenate(feats[1]) if feats[1] else np.zeros((0, 2048))
        result['fid'] = fid_lib.frechet_of_features(f1, f2) if len(f1) >= 2 else None
    return result, faces, skipped
