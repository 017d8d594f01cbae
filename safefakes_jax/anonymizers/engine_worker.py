"""The worker side of the anonymization engine: read, decode, anonymize, encode, write.

One chunk of `engine_plan.Task`s at a time, in a worker process (or in the driver with
`workers=1`). `_process` does all of it for methods that run anywhere; for device-bound
methods the driver splits it: workers `decode_chunk`, the driver `anonymize_in_batches`,
workers `encode_chunk`. Every function writes only the task's output path, which
`engine_plan` checked to lie inside `dst`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from safefakes_jax.anonymizers import base
from safefakes_jax.anonymizers.engine_plan import Task
from safefakes_jax.data import atomic_io, images
from safefakes_jax.data import manifest as mf


def image_seed(seed: int, name: str) -> list[int]:
    """The seed of image `name`'s generator: `[seed, first 8 bytes of sha256(name)]`."""
    return [int(seed), int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], 'little')]


@dataclasses.dataclass(frozen=True)
class Settings:
    image_format: str
    jpeg_quality: int
    png_compression: int
    seed: int
    method: str
    config_hash: str


WORKER: dict[str, Any] = {}


def _exit_with_parent(sentinel) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)  # The parent died (kill -9): do not linger as an orphan.


def init_worker(anonymizer: base.Anonymizer, settings: Settings, pool: bool) -> None:
    if pool:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # The parent handles Ctrl-C.
        parent = multiprocessing.parent_process()
        if parent is not None:
            threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()
    cv2.setNumThreads(1)  # One process per core; no nested thread pools.
    WORKER.update(anonymizer=anonymizer, settings=settings)


def _entry(
    task: Task,
    settings: Settings,
    status: str,
    source_sha: str | None,
    output_sha: str | None,
    faces: list[str],
) -> dict:
    return {
        'split': task.split,
        'image': task.name,
        'output': task.out_name if status == 'ok' else None,
        'status': status,
        'source_sha256': source_sha,
        'output_sha256': output_sha,
        'faces': faces,
        'method': settings.method,
        'config_hash': settings.config_hash,
    }


def _failed(task: Task, settings: Settings, reason: str, source_sha: str | None) -> dict:
    try:  # A stale output of an earlier run must not survive as if anonymized.
        os.remove(task.output)
    except FileNotFoundError:
        pass
    return _entry(task, settings, f'failed:{reason}', source_sha, None, [])


def _valid(result: base.Result, item: base.Item) -> bool:
    return (
        isinstance(result, base.Result)
        and result.image.shape == item.image.shape
        and result.image.dtype == np.uint8
        and len(result.records) == len(item.boxes)
    )


def _anonymize(anonymizer: base.Anonymizer, items: list[base.Item]) -> list[base.Result]:
    """`anonymize_batch`, failing closed: if the batch raises or returns something malformed,
    each image is retried alone, and an image that still fails has its faces blacked out."""
    try:
        results = anonymizer.anonymize_batch(items)
        if len(results) == len(items) and all(map(_valid, results, items)):
            return results
    except Exception:  # noqa: BLE001
        pass
    results = []
    for item in items:
        try:
            (result,) = anonymizer.anonymize_batch([item])
            if not _valid(result, item):
                raise ValueError('malformed result')
        except Exception as e:  # noqa: BLE001
            result = anonymizer.blackout_all(item, f'error:{type(e).__name__}')
        results.append(result)
    return results


def decode_chunk(tasks: Sequence[Task]) -> tuple[list, list[tuple[int, str, np.ndarray]]]:
    """Worker: reads and decodes a chunk. Returns the per-task results known already (resumed
    or failed images; None for the others) and `(index, source sha256, RGB image)` of the
    images to anonymize."""
    settings = WORKER['settings']
    out: list[tuple[dict, bool] | None] = [None] * len(tasks)
    pending: list[tuple[int, str, np.ndarray]] = []
    for i, task in enumerate(tasks):
        if mf.entry_is_done(
            task.previous, settings.config_hash, task.source, task.output, task.out_name
        ):
            out[i] = (task.previous, True)
            continue
        try:
            with open(task.source, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            out[i] = (_failed(task, settings, 'missing_source', None), False)
            continue
        except OSError as e:  # A folder, no permission, an I/O error: report, go on.
            out[i] = (_failed(task, settings, f'unreadable_source:{type(e).__name__}', None), False)
            continue
        source_sha = hashlib.sha256(data).hexdigest()
        try:
            pending.append((i, source_sha, images.decode(data, task.source)))
        except images.ImageDecodeError:
            out[i] = (_failed(task, settings, 'undecodable', source_sha), False)
    return out, pending


def items_of(tasks: Sequence[Task], pending, seed: int) -> list[base.Item]:
    return [
        base.Item(
            image,
            tasks[i].boxes,
            tasks[i].keypoints,
            np.random.default_rng(image_seed(seed, tasks[i].name)),
            tasks[i].name,
        )
        for i, _, image in pending
    ]


def encode_chunk(
    tasks: Sequence[Task], out: list, pending, results: Sequence[base.Result]
) -> list[tuple[dict, bool]]:
    """Worker: encodes and writes the anonymized images of a chunk; returns every entry."""
    settings = WORKER['settings']
    for (i, source_sha, _), result in zip(pending, results, strict=True):
        task = tasks[i]
        data = images.encode(
            result.image,
            settings.image_format,
            jpeg_quality=settings.jpeg_quality,
            png_compression=settings.png_compression,
        )
        atomic_io.write_bytes(task.output, data)
        out[i] = (
            _entry(
                task,
                settings,
                'ok',
                source_sha,
                hashlib.sha256(data).hexdigest(),
                list(result.records),
            ),
            False,
        )
    return out


def anonymize_in_batches(
    anonymizer: base.Anonymizer, items: list[base.Item], pad: bool
) -> list[base.Result]:
    """`_anonymize` over groups of `batch_size`; with `pad` the last group is filled up with
    copies of its last item (results dropped) so that every call has the same size."""
    step = max(1, int(anonymizer.batch_size))
    results = []
    for start in range(0, len(items), step):
        group = items[start : start + step]
        filler = [group[-1]] * (step - len(group)) if pad else []
        results += _anonymize(anonymizer, group + filler)[: len(group)]
    return results


def process(tasks: Sequence[Task]) -> list[tuple[dict, bool]]:
    """Worker: decodes, anonymizes, encodes a chunk; returns (manifest entry, resumed) per
    task."""
    out, pending = decode_chunk(tasks)
    items = items_of(tasks, pending, WORKER['settings'].seed)
    results = anonymize_in_batches(WORKER['anonymizer'], items, pad=False)
    return encode_chunk(tasks, out, pending, results)
