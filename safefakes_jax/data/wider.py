"""WIDER FACE file formats: the layout, annotation text and prediction folders.

Follows the official layout (`../shared/reference/wider_eval.md` §2-4):

* `wider_face_split/wider_face_{train,val}_bbx_gt.txt`: blocks of `event/name.jpg`, a face
  count N, then N rows `x y w h blur expression illumination invalid occlusion pose`. An image
  with N = 0 is followed by one all-zero dummy row, which is consumed and never becomes a face.
* `eval_tools/ground_truth/*.mat`, the evaluation ground truth: `wider_mat.py`.
* Prediction folders: `<pred_dir>/<event>/<name>.txt` with the image name, a count N and N rows
  `x y w h score`.

Every reader names the file and line of bad input. Every writer is atomic.

Degenerate rows: the real val split has rows with w <= 0 or h <= 0 (wider_eval.md §1). Rows
with a zero size are kept (they keep the row indices aligned with the .mat keep lists; trainers
drop them); a *negative* size is an error unless `allow_negative=True` (needed for the real
val split, whose `39_Ice_Skating_iceskiing_39_583` has w = -2).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from safefakes_jax.data import atomic_io, root_paths

ATTRIBUTE_NAMES = ('blur', 'expression', 'illumination', 'invalid', 'occlusion', 'pose')
SETTINGS = ('easy', 'medium', 'hard')
SPLITS = ('train', 'val')
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
_INT32 = (-(2**31), 2**31 - 1)


class FormatError(ValueError):
    """Malformed WIDER FACE file; the message starts with `file:line:`."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        where = f'{os.fspath(path)}:{line}' if line is not None else os.fspath(path)
        super().__init__(f'{where}: {message}')
        self.path = os.fspath(path)
        self.line = line


@dataclasses.dataclass
class ImageAnnotation:
    """The faces of one image.

    Attributes:
      name: path relative to the images folder, as in the txt: `event/name.jpg`.
      boxes: int32 [N, 4] `x y w h` in pixels (N may be 0).
      attributes: int32 [N, 6] in `ATTRIBUTE_NAMES` order.
      line: the 1-based line of the name in the file it was read from (0: not read).
    """

    name: str
    boxes: np.ndarray
    attributes: np.ndarray
    line: int = dataclasses.field(default=0, compare=False)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.int32).reshape(-1, 4)
        self.attributes = np.asarray(self.attributes, np.int32).reshape(-1, len(ATTRIBUTE_NAMES))
        if len(self.boxes) != len(self.attributes):
            raise ValueError(
                f'{self.name}: {len(self.boxes)} boxes but {len(self.attributes)} attribute rows'
            )

    @property
    def event(self) -> str:
        return self.name.split('/')[0]

    @property
    def stem(self) -> str:
        base = self.name.split('/')[-1]
        return base[:-4] if base.lower().endswith('.jpg') else os.path.splitext(base)[0]

    @property
    def valid_boxes(self) -> np.ndarray:
        """Boxes with positive width and height, `x y w h` (the faces a detector trains on)."""
        return self.boxes[(self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0)]


def split_paths(root: str | os.PathLike, split: str) -> tuple[str, str]:
    """Returns (annotation txt, images folder) of `split` ('train' or 'val') under `root`."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    root = os.fspath(root)
    return (
        os.path.join(root, 'wider_face_split', f'wider_face_{split}_bbx_gt.txt'),
        os.path.join(root, f'WIDER_{split}', 'images'),
    )


def require_split(root: str | os.PathLike, split: str, how_to_create: str = '') -> tuple[str, str]:
    """Like `split_paths`, but fails early, naming what is missing and how to create it.

    Args:
      root: a WIDER-layout folder.
      split: 'train' or 'val'.
      how_to_create: a command that creates `root`, added to the error message.

    Raises:
      FileNotFoundError: the annotation file or the images folder is missing.
    """
    txt, images = split_paths(root, split)
    for path in (txt, images):
        if not os.path.exists(path):
            hint = f' Create it with: {how_to_create}' if how_to_create else ''
            raise FileNotFoundError(
                f'WIDER FACE {split} split not found: {path} is missing '
                f'(root {os.fspath(root)!r}).{hint}'
            )
    return txt, images


# --------------------------------------------------------------------------- annotation txt


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file (annotation or prediction), without line ends.

    Raises:
      FormatError: the file starts with a byte-order mark, or is not valid UTF-8 (naming the
        line of the first bad byte).
    """
    with open(path, 'rb') as f:
        data = f.read()
    if data.startswith((b'\xef\xbb\xbf', b'\xff\xfe', b'\xfe\xff')):
        raise FormatError(
            path, 1, 'file starts with a byte-order mark; save it as plain UTF-8 without BOM'
        )
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise FormatError(
            path,
            data[: e.start].count(b'\n') + 1,
            f'not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start})',
        ) from None
    return text.splitlines()


def _is_name(line: str) -> bool:
    return line.strip().lower().endswith(IMAGE_SUFFIXES)


def _parse_ints(path, lineno: int, line: str, n: int, what: str) -> list[int]:
    fields = line.split()
    if len(fields) != n:
        raise FormatError(
            path, lineno, f'expected {n} fields ({what}), got {len(fields)}: {line.strip()!r}'
        )
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise FormatError(path, lineno, f'non-integer field in {what}: {line.strip()!r}') from None
    if any(not _INT32[0] <= v <= _INT32[1] for v in values):
        raise FormatError(path, lineno, f'value out of the int32 range in {what}: {line.strip()!r}')
    return values


def read_bbx_gt(
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    strict: bool = False,
    allow_negative: bool = False,
) -> list[ImageAnnotation]:
    """Reads `wider_face_{split}_bbx_gt.txt`.

    Every image name must be a plain relative path (`root_paths.name_problem`: no absolute
    path, no `..`) and appear once.

    Args:
      path: the annotation file.
      images_dir: if given, every listed image must exist under it, and resolve inside it
        (no symlink out of the folder). A missing image is a
        `FileNotFoundError` naming the file and line when `strict`, otherwise it is skipped and
        the skips are reported in one warning with their count.
      strict: see `images_dir`.
      allow_negative: keep rows with a negative width or height instead of raising.

    Returns:
      One `ImageAnnotation` per image, in file order.

    Raises:
      FormatError: a count that disagrees with the rows, a non-numeric or out-of-int32 field,
        a wrong number of fields, a negative size, a duplicate image, a byte-order mark or
        bytes that are not UTF-8; the message names the file and line.
      root_paths.PathEscapeError: an unsafe name, or one resolving outside `images_dir`.
    """
    lines = read_text_lines(path)
    annotations, missing = [], []
    seen: dict[str, int] = {}
    i, n_lines = 0, len(lines)
    while i < n_lines:
        name = lines[i].strip()
        name_line = i + 1
        i += 1
        if not name:
            continue
        if not _is_name(name) or len(name.split()) != 1:
            raise FormatError(path, name_line, f'expected an image path, got {name!r}')
        problem = root_paths.name_problem(name)
        if problem:
            raise FormatError(
                path,
                name_line,
                f'{name!r}: {problem}; image names must be relative paths inside the images folder',
            )
        if name in seen:
            raise FormatError(
                path,
                name_line,
                f'{name} is listed twice (lines {seen[name]} and '
                f'{name_line}); merge its blocks into one',
            )
        seen[name] = name_line
        if i >= n_lines:
            raise FormatError(path, name_line, f'{name}: missing face count at end of file')
        (count,) = _parse_ints(path, i + 1, lines[i], 1, 'face count')
        if count < 0:
            raise FormatError(path, i + 1, f'negative face count {count}')
        i += 1
        rows = []
        for _ in range(count):
            if i >= n_lines or _is_name(lines[i]):
                raise FormatError(
                    path,
                    i + 1 if i < n_lines else i,
                    f'{name}: count says {count} faces but only {len(rows)} rows follow',
                )
            row = _parse_ints(path, i + 1, lines[i], 10, 'x y w h + 6 attributes')
            if (row[2] < 0 or row[3] < 0) and not allow_negative:
                raise FormatError(path, i + 1, f'{name}: negative box size w={row[2]} h={row[3]}')
            rows.append(row)
            i += 1
        if count == 0 and i < n_lines and lines[i].split() == ['0'] * 10:
            i += 1  # The dummy row of a 0-face image: consume, it is not a face.
        if i < n_lines and lines[i].strip() and not _is_name(lines[i]):
            raise FormatError(
                path,
                i + 1,
                f'{name}: count says {count} faces but more rows follow: {lines[i].strip()!r}',
            )
        if images_dir is not None and not os.path.isfile(
            root_paths.resolve_inside(images_dir, name, f'{os.fspath(path)}:{name_line}')
        ):
            if strict:
                raise FileNotFoundError(
                    f'{os.fspath(path)}:{name_line}: image {name} not found '
                    f'under {os.fspath(images_dir)}'
                )
            missing.append(name)
            continue
        arr = np.asarray(rows, np.int32).reshape(-1, 10)
        annotations.append(ImageAnnotation(name, arr[:, :4], arr[:, 4:], name_line))
    if missing:
        warnings.warn(
            f'{os.fspath(path)}: skipped {len(missing)} listed images missing under '
            f'{os.fspath(images_dir)} (first: {missing[0]})',
            stacklevel=2,
        )
    return annotations


def format_bbx_gt(annotations: Iterable[ImageAnnotation]) -> str:
    """The text of a `wider_face_{split}_bbx_gt.txt` (0-face images get the dummy row)."""
    out = []
    for ann in annotations:
        out.append(f'{ann.name}\n{len(ann.boxes)}\n')
        if len(ann.boxes) == 0:
            out.append('0 0 0 0 0 0 0 0 0 0 \n')
        for box, attrs in zip(ann.boxes, ann.attributes, strict=True):
            out.append(' '.join(str(int(v)) for v in (*box, *attrs)) + ' \n')
    return ''.join(out)


def write_bbx_gt(path: str | os.PathLike, annotations: Iterable[ImageAnnotation]) -> None:
    """Writes a `wider_face_{split}_bbx_gt.txt` atomically (trailing spaces as the original)."""
    atomic_io.write_text(path, format_bbx_gt(annotations))


# --------------------------------------------------------------------------- predictions


def format_prediction(stem: str, dets: np.ndarray) -> str:
    """The text of one prediction file; floats are written round-trip exact."""
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    rows = ''.join(' '.join(repr(float(v)) for v in row) + '\n' for row in dets)
    return f'{stem}\n{len(dets)}\n{rows}'


def write_predictions(
    pred_dir: str | os.PathLike, predictions: Mapping[tuple[str, str], np.ndarray]
) -> None:
    """Writes `{(event, stem): [N, 5] x y w h score}` as `<pred_dir>/<event>/<stem>.txt`."""
    for (event, stem), dets in predictions.items():
        atomic_io.write_text(
            os.path.join(pred_dir, event, stem + '.txt'), format_prediction(stem, dets)
        )


def read_prediction_file(path: str | os.PathLike) -> np.ndarray:
    """Reads one prediction file as float64 [N, 5] `x y w h score`.

    A count line that disagrees with the rows gives a warning and the rows win. A malformed
    row, a NaN / infinite value, a byte-order mark or non-UTF-8 bytes are a `FormatError`
    naming the file and line.
    """
    lines = read_text_lines(path)
    if len(lines) < 2:  # Empty file or name only: no detections.
        return np.zeros((0, 5))
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise FormatError(
            path, 2, f'expected a detection count, got {lines[1].strip()!r}'
        ) from None
    rows = []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise FormatError(
                path,
                lineno,
                f'expected 5 fields x y w h score, got {len(fields)}: {line.strip()!r}',
            )
        try:
            row = [float(v) for v in fields]
        except ValueError:
            raise FormatError(path, lineno, f'non-numeric field: {line.strip()!r}') from None
        if not all(math.isfinite(v) for v in row):
            raise FormatError(path, lineno, f'NaN or infinite value: {line.strip()!r}')
        rows.append(row)
    if count != len(rows):
        warnings.warn(
            f'{os.fspath(path)}:2: count says {count} detections but {len(rows)} '
            'rows follow; using the rows',
            stacklevel=2,
        )
    return np.asarray(rows, np.float64).reshape(-1, 5)


def read_predictions(pred_dir: str | os.PathLike) -> dict[tuple[str, str], np.ndarray]:
    """Reads every `<event>/<stem>.txt` of a prediction folder into `{(event, stem): dets}`.

    Raises:
      FileNotFoundError: `pred_dir` is not a folder.
      root_paths.PathEscapeError: an event folder or file is a symlink out of `pred_dir`.
    """
    pred_dir = os.fspath(pred_dir)
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f'{pred_dir}: prediction folder not found')
    out = {}
    for event in sorted(os.listdir(pred_dir)):
        event_dir = root_paths.resolve_inside(pred_dir, event, pred_dir)
        if not os.path.isdir(event_dir):
            continue
        for fname in sorted(os.listdir(event_dir)):
            if fname.endswith('.txt'):
                file = root_paths.resolve_inside(pred_dir, f'{event}/{fname}', pred_dir)
                out[(event, fname[:-4])] = read_prediction_file(file)
    return out
