"""Writing the non-image part of an anonymized WIDER-layout copy: annotation text, landmarks
sidecar, evaluation ground truth; reading the sidecar's keypoints for the anonymizers.

The copy's annotation file is the source's byte for byte, except that failed images' blocks are
dropped and, for PNG output, names end in `.png` instead of `.jpg`; the sidecar gets the same
edits (edited lines are re-serialized compactly, as `data.synthetic` writes them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from safefakes_jax.data import atomic_io, wider


def output_name(name: str, image_format: str) -> str:
    """The output file name of source image `name` (`.jpg` -> `.png` for PNG output)."""
    stem, ext = os.path.splitext(name)
    if image_format == 'png':
        return stem + '.png'
    return name if ext.lower() in ('.jpg', '.jpeg') else stem + '.jpg'


def _is_name_line(line: str) -> bool:
    s = line.strip()
    return len(s.split()) == 1 and s.lower().endswith(('.jpg', '.jpeg', '.png'))


def copy_bbx_gt(src_txt: str, dst_txt: str, drop: set[str], image_format: str) -> None:
    """Copies an annotation file, dropping the blocks of `drop` and renaming for the format;
    byte for byte when there is nothing to change."""
    with open(src_txt, 'rb') as f:
        raw = f.read()
    text = raw.decode('utf-8')
    lines = text.splitlines(keepends=True)
    out, keep = [], True
    for line in lines:
        if _is_name_line(line):
            name = line.strip()
            keep = name not in drop
            if keep:
                new = output_name(name, image_format)
                line = line.replace(name, new, 1) if new != name else line
        if keep:
            out.append(line)
    new_text = ''.join(out)
    if new_text == text:
        atomic_io.write_bytes(dst_txt, raw)
    else:
        atomic_io.write_text(dst_txt, new_text)


def copy_sidecar(src: str, dst: str, drop: set[str], image_format: str) -> None:
    """Copies `landmarks/<split>.jsonl` with the same edits as the txt."""
    with open(src, encoding='utf-8') as f:
        lines = f.readlines()
    out = []
    for line in lines:
        record = json.loads(line) if line.strip() else None
        if record is None or not isinstance(record, dict) or 'image' not in record:
            out.append(line)
            continue
        if record['image'] in drop:
            continue
        new = output_name(record['image'], image_format)
        if new != record['image']:
            record['image'] = new
            line = json.dumps(record, separators=(',', ':')) + '\n'
        out.append(line)
    atomic_io.write_text(dst, ''.join(out))


def copy_tree(src: str, dst: str) -> None:
    """Copies every file under `src` to `dst` (atomic per file)."""
    for folder, _, files in os.walk(src):
        for file in files:
            path = os.path.join(folder, file)
            with open(path, 'rb') as f:
                atomic_io.write_bytes(os.path.join(dst, os.path.relpath(path, src)), f.read())


def load_keypoints(src: str, split: str, annotations: Sequence[wider.ImageAnnotation]
                   ) -> list[list[dict | None] | None]:
    """Per image, per face keypoints from `src/landmarks/<split>.jsonl` (None where missing or
    where the sidecar's box disagrees with the annotation's)."""
    path = os.path.join(src, 'landmarks', f'{split}.jsonl')
    if not os.path.isfile(path):
        return [None] * len(annotations)
    by_name = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_name[record['image']] = record['faces']
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
                per_face.append({key: np.asarray(f[key], np.float32)
                                 for key in ('keypoints7', 'landmarks68') if key in f})
        out.append(per_face)
    return out


