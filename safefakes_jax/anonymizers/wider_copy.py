"""Writing the non-image part of an anonymized WIDER-layout copy: annotation text, landmarks
sidecar, evaluation ground truth; reading the sidecar's keypoints for the anonymizers.

The copy's annotation file is the source's byte for byte, except that failed images' blocks are
dropped and, for PNG output, names end in `.png` instead of `.jpg`; the sidecar gets the same
edits (edited lines are re-serialized compactly, as `data.synthetic` writes them).

Of `eval_tools/` only the evaluation ground truth is copied: the regular files
`eval_tools/ground_truth/*.mat` that lie inside the source folder (no symlink out of it) and
read as MATLAB files holding only WIDER ground-truth variables (`ground_truth_files`). Nothing
else is copied as is: a raw copy of an arbitrary folder could carry original face images (or a
symlink's target) into a folder that claims to be anonymized.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import scipy.io

from safefakes_jax.data import atomic_io, landmarks_sidecar, root_paths, wider

GROUND_TRUTH_DIR = 'eval_tools/ground_truth'
# The variables of the official ground-truth .mat files (wider_face_val.mat, wider_*_val.mat).
GROUND_TRUTH_VARIABLES = frozenset(
    {
        'event_list',
        'file_list',
        'face_bbx_list',
        'gt_list',
        'blur_label_list',
        'expression_label_list',
        'illumination_label_list',
        'invalid_label_list',
        'occlusion_label_list',
        'pose_label_list',
    }
)


def output_name(name: str, image_format: str) -> str:
    """The output file name of source image `name` (`.jpg` -> `.png` for PNG output)."""
    stem, ext = os.path.splitext(name)
    if image_format == 'png':
        return stem + '.png'
    return name if ext.lower() in ('.jpg', '.jpeg') else stem + '.jpg'


def copy_bbx_gt(src_txt: str, dst_txt: str, drop: set[str], image_format: str) -> None:
    """Copies an annotation file, dropping the blocks of `drop` and renaming for the format;
    byte for byte when there is nothing to change. The blocks are those `wider.read_bbx_gt`
    finds (one reader of the format; it also rejects what cannot be copied: BOM, non-UTF-8)."""
    annotations = wider.read_bbx_gt(src_txt, allow_negative=True)
    with open(src_txt, 'rb') as f:
        raw = f.read()
    text = raw.decode('utf-8')
    lines = text.splitlines(keepends=True)
    starts = [ann.line - 1 for ann in annotations] + [len(lines)]
    out = lines[: starts[0]]
    for ann, start, end in zip(annotations, starts, starts[1:], strict=False):
        if ann.name in drop:
            continue
        new = output_name(ann.name, image_format)
        out.append(lines[start].replace(ann.name, new, 1) if new != ann.name else lines[start])
        out.extend(lines[start + 1 : end])
    new_text = ''.join(out)
    if new_text == text:
        atomic_io.write_bytes(dst_txt, raw)
    else:
        atomic_io.write_text(dst_txt, new_text)


def copy_sidecar(src: str, dst: str, drop: set[str], image_format: str) -> None:
    """Copies `landmarks/<split>.jsonl` with the same edits as the txt."""
    lines = wider.read_text_lines(src)
    out = [line + '\n' for line in lines]
    for lineno, record in landmarks_sidecar.read(src):
        name = record['image']
        if name in drop:
            out[lineno - 1] = ''
        elif output_name(name, image_format) != name:
            record['image'] = output_name(name, image_format)
            out[lineno - 1] = json.dumps(record, separators=(',', ':')) + '\n'
    atomic_io.write_text(dst, ''.join(out))


def ground_truth_files(src: str) -> list[str]:
    """The ground-truth files of `src` to copy, as names relative to `src` (module docstring).

    Raises:
      root_paths.PathEscapeError: a `.mat` entry that is a symlink out of `src`.
      ValueError: a `.mat` entry that is not a regular file, not a MATLAB file, or holds
        variables other than the WIDER ground truth's; the message names it.
    """
    folder = os.path.join(src, GROUND_TRUTH_DIR)
    if not os.path.isdir(folder) or not root_paths.is_inside(folder, src):
        return []
    names = []
    for file in sorted(os.listdir(folder)):
        if not file.lower().endswith('.mat'):
            continue
        name = f'{GROUND_TRUTH_DIR}/{file}'
        path = root_paths.resolve_inside(src, name, folder)
        if not os.path.isfile(path):
            raise ValueError(f'{path}: not a regular file; refusing to copy it')
        try:
            variables = {v[0] for v in scipy.io.whosmat(path)}
        except Exception as e:  # scipy raises several types for files that are not .mat.
            raise ValueError(
                f'{path}: not a MATLAB ground-truth file ({e}); refusing to copy it'
            ) from None
        if not variables <= GROUND_TRUTH_VARIABLES:
            raise ValueError(
                f'{path}: variables {sorted(variables - GROUND_TRUTH_VARIABLES)} '
                'are not WIDER ground truth; refusing to copy it'
            )
        names.append(name)
    return names


def copy_files(src: str, dst: str, names: Sequence[str]) -> None:
    """Copies `src/<name>` to `dst/<name>` for each relative name (atomic per file)."""
    for name in names:
        with open(os.path.join(src, name), 'rb') as f:
            atomic_io.write_bytes(os.path.join(dst, name), f.read())


def load_keypoints(
    src: str, split: str, annotations: Sequence[wider.ImageAnnotation]
) -> list[list[dict | None] | None]:
    """Per image, per face keypoints from `src/landmarks/<split>.jsonl` (None where missing or
    where the sidecar's box disagrees with the annotation's)."""
    path = landmarks_sidecar.path(src, split)
    if not os.path.isfile(path):
        return [None] * len(annotations)
    by_name = {record['image']: record['faces'] for _, record in landmarks_sidecar.read(path)}
    out = []
    for ann in annotations:
        faces = by_name.get(ann.name)
        if faces is None:
            out.append(None)
            continue
        per_face = []
        for k, box in enumerate(ann.boxes):
            f = faces[k] if k < len(faces) else None
            if f is None or list(f.get('box', [])) != box.tolist():
                per_face.append(None)
            else:
                entry = {
                    key: np.asarray(f[key], np.float32)
                    for key in ('keypoints7', 'landmarks68')
                    if key in f
                }
                if isinstance(f.get('identity'), int):  # CIAGAN's `identity='next'`.
                    entry['identity'] = f['identity']
                per_face.append(entry)
        out.append(per_face)
    return out
