"""The WIDER FACE evaluation ground truth: `eval_tools/ground_truth/*.mat`.

Follows the official files (`wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat`): cell
arrays per event (`event_list`, `file_list`, `face_bbx_list`, the six `*_label_list`s and, in
the setting files, `gt_list` of 1-based keep indices). Events are written in the official
order (by the number before `--`). Readers name the file of bad input; writers are atomic.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.io

from safefakes_jax.data import atomic_io, wider

_LABEL_LISTS = tuple(f'{a}_label_list' for a in wider.ATTRIBUTE_NAMES)


@dataclasses.dataclass
class GroundTruthImage:
    """One val image of the evaluation ground truth.

    Attributes:
      event: event folder, e.g. `0--Parade`.
      stem: image name without `.jpg`.
      boxes: int32 [K, 4] `x y w h` (a 0-face image has one `[0 0 0 0]` row, as in the .mat).
      keep: setting -> int64 0-based indices into `boxes` of the faces that count.
    """

    event: str
    stem: str
    boxes: np.ndarray
    keep: dict[str, np.ndarray]


@dataclasses.dataclass
class GroundTruth:
    """The contents of `eval_tools/ground_truth/`: events and images in the .mat order."""

    events: list[str]
    images: list[GroundTruthImage]


def ground_truth_dir(root: str | os.PathLike) -> str:
    """The evaluation ground-truth folder of a WIDER-layout `root`."""
    return os.path.join(os.fspath(root), 'eval_tools', 'ground_truth')


def _cell(items: Sequence) -> np.ndarray:
    """A MATLAB n x 1 cell array (element-wise assignment keeps numpy from broadcasting)."""
    cell = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        cell[k, 0] = item
    return cell


def _group_by_event(annotations: Sequence[wider.ImageAnnotation]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for k, ann in enumerate(annotations):
        groups[ann.event].append(k)

    def event_key(event: str):  # Official order: by the event number before '--'.
        head = event.split('--')[0]
        return (int(head), event) if head.isdigit() else (math.inf, event)

    return {e: groups[e] for e in sorted(groups, key=event_key)}


def write_ground_truth(
    gt_dir: str | os.PathLike,
    annotations: Sequence[wider.ImageAnnotation],
    keep: Mapping[str, Sequence[np.ndarray]],
) -> None:
    """Writes `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat` in the official form.

    Args:
      gt_dir: output folder (`eval_tools/ground_truth`).
      annotations: the val images, with attributes.
      keep: for each of `wider.SETTINGS`, one array per annotation of 0-based indices into its
        boxes; written as 1-based int32 columns (integers, so that index-based readers such
        as the public Python port can use them; the reader accepts int or double).
    """
    if set(keep) != set(wider.SETTINGS):
        raise ValueError(f'keep must have the settings {wider.SETTINGS}, got {sorted(keep)}')
    groups = _group_by_event(annotations)
    events = list(groups)

    def per_event(fn) -> np.ndarray:
        return _cell([_cell([fn(k) for k in groups[e]]) for e in events])

    def boxes(k: int) -> np.ndarray:
        b = annotations[k].boxes
        return b if len(b) else np.zeros((1, 4), np.int32)

    def label(k: int, col: int) -> np.ndarray:
        a = annotations[k].attributes[:, col : col + 1]
        return a if len(a) else np.zeros((1, 1), np.int32)

    base = {
        'event_list': _cell([np.array([e]) for e in events]),
        'file_list': per_event(lambda k: np.array([annotations[k].stem])),
        'face_bbx_list': per_event(boxes),
    }
    for col, name in enumerate(_LABEL_LISTS):
        base[name] = per_event(lambda k, col=col: label(k, col))
    os.makedirs(gt_dir, exist_ok=True)
    _savemat(os.path.join(gt_dir, 'wider_face_val.mat'), base)
    for setting in wider.SETTINGS:
        lists = keep[setting]
        if len(lists) != len(annotations):
            raise ValueError(
                f'keep[{setting!r}] has {len(lists)} entries for {len(annotations)} images'
            )

        def column(k: int, lists=lists) -> np.ndarray:
            idx = np.asarray(lists[k], np.int64).reshape(-1)
            n = len(annotations[k].boxes)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f'{annotations[k].name}: keep index out of range 0..{n - 1}')
            return (idx + 1).astype(np.int32).reshape(-1, 1)

        _savemat(
            os.path.join(gt_dir, f'wider_{setting}_val.mat'), {**base, 'gt_list': per_event(column)}
        )


def _savemat(path: str, variables: dict) -> None:
    with atomic_io.atomic_open(path, 'wb') as f:
        scipy.io.savemat(f, variables, do_compression=True)


def _load_mat(path: str, names: Sequence[str]) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: WIDER ground-truth file not found')
    try:
        m = scipy.io.loadmat(path, variable_names=list(names))  # Only what is used: faster.
    except Exception as e:  # scipy raises several types for corrupt files.
        raise wider.FormatError(path, None, f'cannot read .mat file: {e}') from e
    for name in names:
        if name not in m:
            raise wider.FormatError(path, None, f'missing variable {name!r}')
    return m


def read_ground_truth(gt_dir: str | os.PathLike) -> GroundTruth:
    """Reads the official evaluation ground truth (the four .mat files of `gt_dir`).

    Keep indices may be stored as int or double arrays; they are returned 0-based.
    """
    gt_dir = os.fspath(gt_dir)
    full_path = os.path.join(gt_dir, 'wider_face_val.mat')
    full = _load_mat(full_path, ('event_list', 'file_list', 'face_bbx_list'))
    events = [str(full['event_list'][i][0][0]) for i in range(len(full['event_list']))]
    images = []
    for i, event in enumerate(events):
        files, bbxs = full['file_list'][i][0], full['face_bbx_list'][i][0]
        for j in range(len(files)):
            boxes = np.asarray(bbxs[j][0], np.float64).reshape(-1, 4)
            images.append(GroundTruthImage(event, str(files[j][0][0]), boxes.astype(np.int32), {}))
    for setting in wider.SETTINGS:
        path = os.path.join(gt_dir, f'wider_{setting}_val.mat')
        gt_list = _load_mat(path, ('gt_list',))['gt_list']
        k = 0
        for i in range(len(events)):
            column = gt_list[i][0]
            for j in range(len(column)):
                if k >= len(images):
                    raise wider.FormatError(
                        path, None, 'gt_list has more images than wider_face_val.mat'
                    )
                idx = np.asarray(column[j][0], np.float64).reshape(-1)
                if idx.size and (
                    np.any(idx != np.round(idx))
                    or idx.min() < 1
                    or idx.max() > len(images[k].boxes)
                ):
                    raise wider.FormatError(
                        path,
                        None,
                        f'{events[i]}/{images[k].stem}: gt_list '
                        f'indices must be 1-based integers <= '
                        f'{len(images[k].boxes)}, got {idx.tolist()}',
                    )
                images[k].keep[setting] = idx.astype(np.int64) - 1
                k += 1
        if k != len(images):
            raise wider.FormatError(
                path, None, f'gt_list has {k} images, wider_face_val.mat {len(images)}'
            )
    return GroundTruth(events, images)
