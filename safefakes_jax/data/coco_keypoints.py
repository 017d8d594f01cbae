"""The COCO-keypoints JSON reader: the people of each image, from a pose model run elsewhere.

DeepPrivacy takes its 7 keypoints from Mask R-CNN's COCO keypoints (the first 7 of COCO's 17:
nose, eyes, ears, shoulders). Users who run such a model elsewhere write its output as a
COCO-keypoints JSON; `anonymizers.keypoints`' `coco_json` source reads it with `read` and
matches the people to the boxes. The file is untrusted input: every field is checked and an
error names the file and the image or annotation index.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from safefakes_jax.data import landmarks_sidecar, wider


def _reject_constant(name: str):
    raise ValueError(f'non-finite number {name}')


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read(path: str) -> dict[str, list[np.ndarray]]:
    """The people of a COCO-keypoints JSON, per `file_name`, in annotation order.

    `images`: objects with `file_name` (the WIDER name `event/name.jpg`) and an int `id`, each
    listed once; `annotations`: objects with `image_id` (one of the ids) and `keypoints` (17 x 3
    numbers, COCO order; the first 7 are DeepPrivacy's; v = 0 absent, 1 / 2 present). Other
    fields are ignored (filter low-scoring people before writing the file).

    Raises:
      wider.FormatError: unreadable or malformed file, non-finite numbers; the message names
        the file (and the image or annotation index).
    """
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8')
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise wider.FormatError(path, e.lineno, f'invalid JSON: {e.msg}') from None
    except (UnicodeDecodeError, ValueError) as e:
        raise wider.FormatError(path, None, str(e)) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ('images', 'annotations')
    ):
        raise wider.FormatError(path, None, 'expected an object with lists "images", "annotations"')
    files: dict[int, str] = {}
    people: dict[str, list[np.ndarray]] = {}
    for i, im in enumerate(data['images']):
        if not isinstance(im, dict) or not isinstance(im.get('file_name'), str):
            raise wider.FormatError(path, None, f'images[{i}]: needs a string "file_name"')
        if not isinstance(im.get('id'), int) or isinstance(im['id'], bool):
            raise wider.FormatError(path, None, f'images[{i}]: needs an integer "id"')
        if im['id'] in files or im['file_name'] in people:
            raise wider.FormatError(path, None, f'images[{i}]: id or file_name listed twice')
        files[im['id']] = im['file_name']
        people[im['file_name']] = []
    for j, ann in enumerate(data['annotations']):
        where = f'annotations[{j}]'
        image_id = ann.get('image_id') if isinstance(ann, dict) else None
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in files:
            raise wider.FormatError(path, None, f'{where}: "image_id" is not an id of "images"')
        kp = ann.get('keypoints')
        if not isinstance(kp, list) or len(kp) != 51 or not all(_number(v) for v in kp):
            raise wider.FormatError(path, None, f'{where}: "keypoints" must be 51 finite numbers')
        p = np.asarray(kp, np.float64).reshape(17, 3)[: len(landmarks_sidecar.KEYPOINT_NAMES)]
        if not np.all(np.isin(p[:, 2], (0, 1, 2))):
            raise wider.FormatError(path, None, f'{where}: visibility must be 0, 1 or 2')
        people[files[image_id]].append(landmarks_sidecar.check_keypoints7(p, f'{path} {where}'))
    return people
