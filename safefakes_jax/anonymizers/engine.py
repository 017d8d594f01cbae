"""Dataset anonymization engine: a WIDER-layout folder in, an anonymized WIDER-layout copy out.

`run(config)` reads each split of `config.splits` from `config.src` (the paper anonymizes the
training set; default `('train',)`), anonymizes every image with the configured method and
writes to `config.dst`:

  WIDER_<split>/images/<event>/<name>.jpg|.png        the anonymized images
  wider_face_split/wider_face_<split>_bbx_gt.txt      copied unchanged, except that failed
                                                      images are dropped and, for PNG output,
                                                      names end in .png
  eval_tools/ground_truth/*.mat                       copied if present (evaluation ground
                                                      truth, validated; see `wider_copy`)
  landmarks/<split>.jsonl                             only with `copy_landmarks=True` (same
                                                      edits as the txt)
  anonymization_config.json, anonymization_manifest.jsonl     see `manifest`

The landmarks sidecar holds the 68 landmarks (and the synthetic set's identity label) of every
*original* face: biometric data. It is left out of the copy unless `copy_landmarks=True` (the
anonymizers that need keypoints read it from `src`).

Splits not anonymized are not copied (copying them raw would put original faces into a folder
that claims to be anonymized); the DSFD configs evaluate on the original val split anyway.
Nothing else of `src` is copied (e.g. `face_crops/`, which holds original faces).

Guarantees:

* Untrusted input, checked before anything is written. Every image name of the annotation
  files must be a plain relative name listed once (`wider.read_bbx_gt`), every path read or
  written must resolve inside `src` or `dst` after symlinks are resolved
  (`root_paths.resolve_inside`), two source images may not map to one output name (`a.jpg` and
  `a.png` with JPEG output), an annotation file must list at least one image, and `dst` must be
  a writable folder (`manifest.check_dst`). Each is a `ValueError` naming the file and line.
* Fail closed. An image that does not fully decode (`data.images.decode` refuses corrupt and
  truncated files) or is missing is recorded `failed:<reason>`, never written, and
  dropped from the copy's txt; the run finishes the rest and the summary lists it. A face the
  method cannot handle is blacked out (`fallback:...`, see `base`); if a whole batch call
  raises, each image is retried alone, then its faces are blacked out.
* Deterministic. Image `name` gets `np.random.default_rng(engine_worker.image_seed(seed,
  name))`; the output bytes do not depend on the worker count or the order in which images finish.
* Resumable. Entries are appended to a partial manifest as images finish; a rerun skips images
  whose entry is verified (config hash, source and output sha256) and ends with the same bytes
  as an uninterrupted run, the manifest (rewritten atomically in annotation order) included.
  Every file is written to a temporary name and renamed. A `dst` written with different
  settings is an error unless `overwrite=True`, which first removes that run's files.

Images are decoded and encoded by the project's one codec, `data.images` (EXIF orientation
ignored, as the ground truth and TensorFlow's decoders do; output has no EXIF): JPEG at
`jpeg_quality` (default 95) or lossless PNG. The paper does not say how it stored anonymized
images; re-encoding adds mild coding noise to every pixel, background included (PNG avoids it).

Parallelism: `workers` spawn-started processes (`concurrent.futures`), one OpenCV thread each,
several images per task; workers ignore Ctrl-C (the driver stops after their current images)
and exit when the driver dies. `workers=1` runs in this process. A device-bound method (the
GANs: `Anonymizer.device_bound`) is never sent to a worker: the workers decode, this process
runs `anonymize_batch` in batches of exactly `batch_size` (the last one padded), so one model
is compiled once and one accelerator is not shared by N processes, and the workers encode.
The output bytes are the same either way.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Mapping
from typing import Any

import cv2

from safefakes_jax.anonymizers import base, engine_plan, wider_copy
from safefakes_jax.anonymizers import engine_worker as worker
from safefakes_jax.anonymizers.engine_plan import Task
from safefakes_jax.data import landmarks_sidecar, root_paths, wider
from safefakes_jax.data import manifest as mf


@dataclasses.dataclass
class Summary:
    """What a run did.

    Attributes:
      images: images of the selected splits.
      processed: images anonymized in this run (the rest were resumed or failed).
      resumed: images verified as already done by an earlier run.
      failed: `(split, image, status)` of every failed image.
      records: count of every face record over all images.
      seconds: wall time.
      dst: the output folder.
    """

    images: int = 0
    processed: int = 0
    resumed: int = 0
    failed: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    seconds: float = 0.0
    dst: str = ''

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    def format(self) -> str:
        """Human-readable lines for the CLI."""
        lines = [
            f'{self.images} images -> {self.dst}: {self.processed} anonymized '
            f'({self.images_per_s:.1f} images/s), {self.resumed} already done, '
            f'{len(self.failed)} failed'
        ]
        lines.append('faces: ' + ', '.join(f'{k} {v}' for k, v in sorted(self.records.items())))
        for split, image, status in self.failed:
            lines.append(f'FAILED {split} {image}: {status} (not written, dropped from the txt)')
        return '\n'.join(lines)


class _IOFloor(base.Anonymizer):
    """Decode + re-encode only: the benchmark's floor. Never registered, never a dataset."""

    name = 'io_floor'
    for_output = False
    check_unchanged = False

    def anonymize_face(self, original, out, face, rng):
        del original, out, face, rng
        return 'skipped:io_floor'


# --------------------------------------------------------------------------- driver


def _pool(
    workers: int, chunks: list, anonymizer: base.Anonymizer | None, settings: worker.Settings
) -> concurrent.futures.ProcessPoolExecutor:
    # Spawn: the caller may hold threads (JAX, TF) that make fork unsafe.
    return concurrent.futures.ProcessPoolExecutor(
        min(workers, len(chunks)),
        mp_context=multiprocessing.get_context('spawn'),
        initializer=worker.init_worker,
        initargs=(anonymizer, settings, True),
    )


@contextlib.contextmanager
def _in_this_process(anonymizer: base.Anonymizer | None, settings: worker.Settings):
    """Runs the worker side in this process (`workers=1`), restoring its state after."""
    saved, threads = dict(worker.WORKER), cv2.getNumThreads()
    worker.init_worker(anonymizer, settings, pool=False)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        worker.WORKER.clear()
        worker.WORKER.update(saved)


def _completed(futures):
    """Yields the results of `futures` as they complete; a dead worker is a clear error."""
    for future in concurrent.futures.as_completed(futures):
        try:
            yield future.result()
        except concurrent.futures.process.BrokenProcessPool as e:
            raise RuntimeError(
                'an anonymization worker process died; finished images are kept, rerun to resume'
            ) from e


def _execute(
    anonymizer: base.Anonymizer, settings: worker.Settings, chunks: list[list[Task]], workers: int
):
    """Yields the results of `worker.process` per chunk, in completion order.

    A device-bound method (`anonymizer.device_bound`: a JAX model on an accelerator) runs in
    this process only, in batches of exactly `batch_size` images, so it is built and compiled
    once; the workers then only decode and encode (`_execute_device_bound`).
    """
    if anonymizer.device_bound:
        yield from _execute_device_bound(anonymizer, settings, chunks, workers)
        return
    if workers <= 1 or len(chunks) <= 1:
        with _in_this_process(anonymizer, settings):
            for chunk in chunks:
                yield worker.process(chunk)
        return
    ex = _pool(workers, chunks, anonymizer, settings)
    todo = iter(chunks)
    try:
        first = (next(todo, None) for _ in range(2 * workers))
        inflight = {ex.submit(worker.process, c) for c in first if c is not None}
        while inflight:
            done, inflight = concurrent.futures.wait(
                inflight, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                chunk = next(todo, None)
                if chunk is not None:
                    inflight.add(ex.submit(worker.process, chunk))
                yield from _completed([future])
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _execute_device_bound(
    anonymizer: base.Anonymizer, settings: worker.Settings, chunks: list[list[Task]], workers: int
):
    """`_execute` for device-bound methods: workers decode, this process anonymizes (padded
    fixed-size batches), workers encode and write. The workers never receive the method."""
    if workers <= 1 or len(chunks) <= 1:
        with _in_this_process(None, settings):
            for chunk in chunks:
                out, pending = worker.decode_chunk(chunk)
                results = worker.anonymize_in_batches(
                    anonymizer, worker.items_of(chunk, pending, settings.seed), pad=True
                )
                yield worker.encode_chunk(chunk, out, pending, results)
        return
    ex = _pool(workers, chunks, None, settings)
    todo, decoding, encoding = iter(chunks), {}, set()

    def refill() -> None:  # Bounded: decoded images wait for the device in memory.
        while len(decoding) < 2 * workers and (chunk := next(todo, None)) is not None:
            decoding[ex.submit(worker.decode_chunk, chunk)] = chunk

    try:
        refill()
        while decoding or encoding:
            done, _ = concurrent.futures.wait(
                set(decoding) | encoding, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                if future in encoding:
                    encoding.discard(future)
                    yield from _completed([future])
                    continue
                chunk = decoding.pop(future)
                ((out, pending),) = _completed([future])
                results = worker.anonymize_in_batches(
                    anonymizer, worker.items_of(chunk, pending, settings.seed), pad=True
                )
                # The worker needs the results, not the decoded images back.
                encoding.add(
                    ex.submit(
                        worker.encode_chunk,
                        chunk,
                        out,
                        [(i, sha, None) for i, sha, _ in pending],
                        results,
                    )
                )
                refill()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def run(
    config: Mapping[str, Any],
    *,
    progress: bool = True,
    io_floor: bool = False,
    anonymizer: base.Anonymizer | None = None,
) -> Summary:
    """Anonymizes `config.splits` of `config.src` into `config.dst` (module docstring).

    Args:
      config: fields `anonymizer` (`name` + parameters), `src`, `dst`, `splits`, `workers`
        (0 = all cores, 1 = in this process), `seed`, `image_format` ('jpeg' | 'png'),
        `jpeg_quality`, optional `png_compression` (0..9, default 3), `overwrite` and
        `copy_landmarks` (default False).
      progress: show a tqdm bar with images/s and faces/s.
      io_floor: benchmark only: decode and re-encode without anonymizing (`config.anonymizer`
        is ignored); writes `io_floor_*` files and no annotation files.
      anonymizer: an instance to use instead of building `config.anonymizer` (custom methods,
        tests); it must be picklable when `workers` > 1.

    Returns:
      A `Summary`; `summary.failed` lists the images that could not be anonymized.

    Raises:
      ValueError: bad settings or input (module docstring), or a `dst` written with other
        settings (see `overwrite`); raised before anything is written.
      FileNotFoundError: a split missing in `src`.
      RuntimeError: a worker process died (the run can be resumed).
    """
    from tqdm import tqdm  # Only the driver needs it.

    start = time.perf_counter()
    engine_plan.check_config(config)
    src, dst, fmt = os.fspath(config['src']), os.fspath(config['dst']), config['image_format']
    splits = tuple(config['splits'])
    if io_floor:
        anonymizer = _IOFloor()
    elif anonymizer is None:
        anonymizer = base.create_from_config(config['anonymizer'])
    elif not anonymizer.for_output:
        raise ValueError(f'anonymizer {anonymizer.name!r} cannot produce a dataset')
    for split in splits:
        wider.require_split(src, split)
    mf.check_dst(dst)
    tasks = {split: engine_plan.plan_split(src, dst, split, anonymizer, fmt) for split in splits}
    ground_truth = [] if io_floor else wider_copy.ground_truth_files(src)
    copy_landmarks = bool(config.get('copy_landmarks', False))
    sidecars = {
        split: root_paths.resolve_inside(src, landmarks_sidecar.relative_path(split), src)
        for split in splits
        if copy_landmarks
    }
    settings = engine_plan.settings_of(config, anonymizer)
    digest = mf.prepare_dst(dst, settings, bool(config.get('overwrite', False)), io_floor)
    s = worker.Settings(
        fmt,
        int(config['jpeg_quality']),
        int(config.get('png_compression', 3)),
        int(config['seed']),
        anonymizer.name,
        digest,
    )
    previous = mf.previous_entries(dst, io_floor)
    flat = [t for split in splits for t in tasks[split]]
    for task in flat:
        task.previous = previous.get((task.split, task.name))
    workers = int(config['workers']) or (os.cpu_count() or 1)
    # One batch per task; several images per task for cheap methods in a pool (less IPC).
    size = max(int(anonymizer.batch_size), 1 if workers <= 1 else 4)
    chunks = [flat[i : i + size] for i in range(0, len(flat), size)]

    summary = Summary(images=len(flat), dst=dst)
    entries: dict[tuple[str, str], dict] = {}
    faces_done = 0
    partial_path = os.path.join(dst, mf.FLOOR_PARTIAL if io_floor else mf.PARTIAL)
    with (
        open(partial_path, 'a', encoding='utf-8') as partial,
        tqdm(
            total=len(flat),
            desc=f'anonymize {anonymizer.name}',
            unit='img',
            disable=not progress,
            smoothing=0.1,
        ) as bar,
    ):
        for results in _execute(anonymizer, s, chunks, workers):
            for entry, resumed in results:
                entries[(entry['split'], entry['image'])] = entry
                if resumed:
                    summary.resumed += 1
                    continue
                partial.write(mf.entry_line(entry))
                if entry['status'] == 'ok':
                    summary.processed += 1
                    faces_done += sum(
                        base.is_anonymized(r) or r.startswith('fallback:') for r in entry['faces']
                    )
            partial.flush()
            bar.update(len(results))
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f'{faces_done / elapsed:.0f} faces/s', refresh=False)

    final = []
    for split in mf.SPLIT_ORDER:
        if split in tasks:
            final += [entries[(split, t.name)] for t in tasks[split]]
        else:  # Kept from an earlier run with the same settings.
            final += [
                e
                for (sp, _), e in previous.items()
                if sp == split and e.get('config_hash') == digest
            ]
    for entry in final:
        summary.records.update(entry['faces'])
        if entry['status'] != 'ok' and entry['split'] in splits:
            summary.failed.append((entry['split'], entry['image'], entry['status']))
    if not io_floor:
        for split in splits:
            drop = {name for sp, name, _ in summary.failed if sp == split}
            wider_copy.copy_bbx_gt(
                wider.split_paths(src, split)[0], wider.split_paths(dst, split)[0], drop, fmt
            )
            out_sidecar = landmarks_sidecar.path(dst, split)
            if split in sidecars and os.path.isfile(sidecars[split]):
                wider_copy.copy_sidecar(sidecars[split], out_sidecar, drop, fmt)
            elif os.path.isfile(out_sidecar):  # An earlier run's copy, not asked for now.
                os.remove(out_sidecar)
        wider_copy.copy_files(src, dst, ground_truth)
    mf.write_manifest(os.path.join(dst, mf.FLOOR_MANIFEST if io_floor else mf.MANIFEST), final)
    os.remove(partial_path)
    summary.seconds = time.perf_counter() - start
    return summary
