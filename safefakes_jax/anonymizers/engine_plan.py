"""What an anonymization run will do: its settings and the checked tasks of each split.

Everything here reads input and writes nothing, so that untrusted input (annotation files,
sidecars, folders) is refused before the first byte is written (`engine` module docstring,
"Untrusted input").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from safefakes_jax.anonymizers import base, wider_copy
from safefakes_jax.data import landmarks_sidecar, root_paths, wider
from safefakes_jax.data import manifest as mf

IMAGE_FORMATS = ('jpeg', 'png')


@dataclasses.dataclass
class Task:
    """One image to anonymize: its names, checked paths, boxes and keypoints.

    Attributes:
      split: 'train' or 'val'.
      name: the source name as in the txt.
      source: path of the source image (inside `src`).
      output: path of the output image (inside `dst`).
      out_name: the output name under `WIDER_<split>/images`.
      boxes: int32 [N, 4] `x y w h`.
      keypoints: per face keypoints from the sidecar, or None.
      previous: the manifest entry of an earlier run, if any (set once `dst` is prepared).
    """

    split: str
    name: str
    source: str
    output: str
    out_name: str
    boxes: np.ndarray
    keypoints: list | None
    previous: dict | None = None


def settings_of(config: Mapping[str, Any], anonymizer: base.Anonymizer) -> dict[str, Any]:
    """The settings that determine the output bytes; `config_hash` is taken of these."""
    fmt = config['image_format']
    settings = {
        'engine_version': mf.ENGINE_VERSION,
        'anonymizer': {'name': anonymizer.name, **anonymizer.params()},
        'seed': int(config['seed']),
        'image_format': fmt,
    }
    if fmt == 'jpeg':
        settings['jpeg_quality'] = int(config['jpeg_quality'])
    else:
        settings['png_compression'] = int(config.get('png_compression', 3))
    return settings


def check_config(config: Mapping[str, Any]) -> None:
    """Checks the settings of a run config; raises ValueError naming the field."""
    if config['image_format'] not in IMAGE_FORMATS:
        raise ValueError(
            f'image_format must be one of {IMAGE_FORMATS}, got {config["image_format"]!r}'
        )
    if not 1 <= int(config['jpeg_quality']) <= 100:
        raise ValueError(f'jpeg_quality must be in 1..100, got {config["jpeg_quality"]}')
    if not 0 <= int(config.get('png_compression', 3)) <= 9:
        raise ValueError(f'png_compression must be in 0..9, got {config["png_compression"]}')
    splits = tuple(config['splits'])
    if not splits or any(s not in wider.SPLITS for s in splits) or len(set(splits)) < len(splits):
        raise ValueError(f'splits must be distinct names from {wider.SPLITS}, got {splits}')
    src, dst = (os.path.realpath(os.fspath(config[k])) for k in ('src', 'dst'))
    if os.path.commonpath([src, dst]) in (src, dst):
        raise ValueError(f'dst {dst} must be outside src {src} (and the other way round)')


def plan_split(src: str, dst: str, split: str, anonymizer: base.Anonymizer, fmt: str) -> list[Task]:
    """The tasks of one split, every input checked (module docstring, "Untrusted input")."""
    txt, _ = wider.require_split(src, split)
    root_paths.resolve_inside(src, f'wider_face_split/{os.path.basename(txt)}', txt)
    annotations = wider.read_bbx_gt(txt, allow_negative=True)
    if not annotations:
        raise ValueError(f'{txt}: lists no image; refusing to write an empty "anonymized" copy')
    if anonymizer.needs_keypoints:
        root_paths.resolve_inside(src, landmarks_sidecar.relative_path(split), src)
        keypoints = wider_copy.load_keypoints(src, split, annotations)
    else:
        keypoints = [None] * len(annotations)
    tasks, outputs = [], {}
    for ann, kp in zip(annotations, keypoints, strict=True):
        where = f'{txt}:{ann.line}'
        out_name = wider_copy.output_name(ann.name, fmt)
        if out_name in outputs:
            raise ValueError(
                f'{where}: {ann.name} and {outputs[out_name]} would both be written '
                f'as {out_name}; rename one (output names must be one-to-one)'
            )
        outputs[out_name] = f'{ann.name} (line {ann.line})'
        source = root_paths.resolve_inside(src, f'WIDER_{split}/images/{ann.name}', where)
        output = root_paths.resolve_inside(dst, f'WIDER_{split}/images/{out_name}', where)
        tasks.append(Task(split, ann.name, source, output, out_name, ann.boxes, kp))
    return tasks
