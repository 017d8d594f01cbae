"""The landmarks sidecar of a WIDER-layout folder: where it is and its one reader.

`landmarks/<split>.jsonl` holds one JSON object per image, in annotation order: `image` (the
name as in the txt) and `faces`, one object per annotated box in row order (`box` x y w h,
`landmarks68`, `keypoints7` x y visible in `KEYPOINT_NAMES` order, and on the synthetic set
`identity`, pose and occlusion). The synthetic generator writes it; face crops and the
keypoint-driven anonymizers read it. It describes the *original* faces (biometric data), so
anonymized copies leave it out unless asked (`engine`, `copy_landmarks`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from safefakes_jax.data import wider

# DeepPrivacy's 7 keypoints (COCO order); "left" is the person's left.
KEYPOINT_NAMES = (
    'nose',
    'left_eye',
    'right_eye',
    'left_ear',
    'right_ear',
    'left_shoulder',
    'right_shoulder',
)


def check_keypoints7(value: Any, where: str) -> np.ndarray:
    """float32 [7, 3] `(x, y, v)`, v in {0, 1}, absent points zeroed; ValueError naming `where`."""
    try:
        p = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: keypoints7 are not a numeric [7, 3] array') from None
    if p.shape != (len(KEYPOINT_NAMES), 3) or not np.all(np.isfinite(p)):
        raise ValueError(f'{where}: keypoints7 must be finite [7, 3] (x, y, v), got {p.shape}')
    out = np.c_[p[:, :2], np.ones(len(KEYPOINT_NAMES))]
    return np.where(p[:, 2:] > 0, out, 0.0).astype(np.float32)


def check_landmarks68(value: Any, where: str) -> np.ndarray:
    """float32 [68, 2] `(x, y)` in image pixels; ValueError naming `where`."""
    try:
        p = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: landmarks68 are not a numeric [68, 2] array') from None
    if p.shape != (68, 2) or not np.all(np.isfinite(p)) or np.abs(p).max() > 1e6:
        raise ValueError(f'{where}: landmarks68 must be finite [68, 2] (x, y), got {p.shape}')
    return p.astype(np.float32)


def relative_path(split: str) -> str:
    """The sidecar's path relative to the WIDER root: `landmarks/<split>.jsonl`."""
    if split not in wider.SPLITS:
        raise ValueError(f'split must be one of {wider.SPLITS}, got {split!r}')
    return f'landmarks/{split}.jsonl'


def path(root: str | os.PathLike, split: str) -> str:
    """The sidecar of `split` under `root`."""
    return os.path.join(os.fspath(root), *relative_path(split).split('/'))


def read(file: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, record) of every non-empty line of a sidecar file.

    Raises:
      wider.FormatError: a line that is not a JSON object with a string `image` and a list
        `faces`, a byte-order mark or non-UTF-8 bytes; the message names the file and line.
    """
    records = []
    for lineno, line in enumerate(wider.read_text_lines(file), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise wider.FormatError(file, lineno, f'invalid JSON: {e}') from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get('image'), str)
            or not isinstance(record.get('faces'), list)
        ):
            raise wider.FormatError(
                file, lineno, 'expected an object with "image" (a name) and "faces" (a list)'
            )
        records.append((lineno, record))
    return records
