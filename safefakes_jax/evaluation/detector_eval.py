"""DSFD on the unaltered WIDER FACE val split: detections, WIDER AP, prediction folder.

Two test-time procedures (`PROCEDURES`; the `wider_ap` evaluator's `procedure`):

* `single`: every val image letterboxed to the evaluator's `image_size`, one jit-compiled
  forward pass per global batch on the training mesh (`predict_single`); fast, used for the
  periodic evaluations during training.
* `multiscale`: the reference's multi-scale + flip + box-voting test
  (`detection.multiscale_test`, dsfd.md §9) on each image at its own size (`predict_multiscale`);
  the paper configs' final evaluation.

Multi-process (`jax.distributed`): each process detects its own shard of the val split, and the
predictions are gathered so that every process returns all of them (`allgather_predictions`)
and computes the same AP over all of them. Process 0 writes the files (`write_results`).
All processes take part in the gathers: one that fails (a corrupt val image, say) leaves the
others waiting until jax's distributed heartbeat times out.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from safefakes_jax import sharding
from safefakes_jax.data import atomic_io, detection_pipeline, images, root_paths, wider, wider_mat
from safefakes_jax.detection import multiscale_test, postprocess
from safefakes_jax.evaluation import image_grids, wider_ap
from safefakes_jax.models import dsfd

PROCEDURES = ('single', 'multiscale')
GRID_SCORE = 0.5  # Detections drawn in the image summaries.
Predictions = dict[tuple[str, str], np.ndarray]


def _key(filename: bytes | str) -> tuple[str, str]:
    name = filename.decode() if isinstance(filename, bytes) else str(filename)
    event, _, base = name.rpartition('/')
    return event, os.path.splitext(base)[0]


def _process_rows(array: jax.Array) -> slice:
    """The rows of a batch-sharded global array that this process supplied.

    They are contiguous and in the order of the process's local batch (how
    `jax.make_array_from_process_local_data` places it).
    """
    n = array.shape[0]
    rows = [s.index[0] for s in array.addressable_shards]
    return slice(
        min(r.start or 0 for r in rows), max(n if r.stop is None else r.stop for r in rows)
    )


def _allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's `data`, in process order (a collective: all processes call it)."""
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
    padded = np.zeros(max(int(sizes.max()), 1), np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [gathered[p, :n].tobytes() for p, n in enumerate(sizes)]


def allgather_predictions(preds: Predictions) -> Predictions:
    """The union of every process's predictions, on every process (a collective)."""
    if jax.process_count() == 1:
        return preds
    keys = sorted(preds)
    buf = io.BytesIO()  # npz, not pickle: names, per-image row counts, all rows.
    np.savez(
        buf,
        events=np.array([k[0] for k in keys], str),
        stems=np.array([k[1] for k in keys], str),
        counts=np.array([len(preds[k]) for k in keys], np.int64),
        rows=np.concatenate([preds[k] for k in keys]) if keys else np.zeros((0, 5)),
    )
    merged = {}
    for blob in _allgather_bytes(buf.getvalue()):
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            keys = zip(f['events'].tolist(), f['stems'].tolist(), strict=True)
            rows = np.split(f['rows'], np.cumsum(f['counts'])[:-1])
            merged.update(zip(keys, rows, strict=True) if len(f['counts']) else ())
    return merged


def make_predict_step(model: Any, mesh) -> Callable[[Any, dict], dict]:
    """`predict(params, batch) -> {'loc2', 'conf2'}` (shot 2, replicated outputs), jit-compiled
    on `mesh` with the batch sharded over `data`."""
    compute_dtype = getattr(model, 'dtype', jnp.float32)

    def predict(params, batch):
        out = model.apply({'params': params}, dsfd.preprocess(batch['image'], compute_dtype))
        return {'loc2': out['loc2'], 'conf2': out['conf2']}

    repl = sharding.replicated(mesh)
    return jax.jit(predict, in_shardings=(repl, sharding.batch_sharding(mesh)), out_shardings=repl)


def single_dataset(
    val_root: str,
    mesh,
    *,
    image_size: int,
    batch_size: int,
    max_boxes: int,
    data_dir: str | None = None,
):
    """The letterboxed val pipeline of `predict_single` (build it once, iterate it each time).

    The global batch is `batch_size` rounded up to a multiple of the mesh's devices; each
    process reads its own shard of the split (all get the same number of batches).
    """
    n_dev = mesh.devices.size
    host_batch = -(-batch_size // n_dev) * n_dev // jax.process_count()
    return detection_pipeline.make_eval_dataset(
        val_root,
        batch_size=host_batch,
        image_size=image_size,
        max_boxes=max_boxes,
        split='val',
        data_dir=data_dir,
        letterbox=True,
    )


def predict_single(
    params: Any,
    predict_fn,
    mesh,
    anchors: np.ndarray,
    dataset,
    *,
    image_size: int,
    conf_thresh: float = 0.05,
    max_batches: int = 0,
    grid: list[np.ndarray] | None = None,
    grid_images: int = 0,
) -> Predictions:
    """Single-scale detections on the val split: `{(event, stem): [N, 5] x y w h score}`.

    Multi-process: the processes predict each global batch together, each post-processes the
    images it supplied, and the predictions are then gathered. `max_batches` (0: all) counts
    global batches (with several processes they hold the first images of each process's
    shard, not of the split).

    Args:
      params: the (replicated) model params.
      predict_fn: `make_predict_step(model, mesh)`.
      mesh: the device mesh.
      anchors: the second-shot anchors at `image_size`.
      dataset: `single_dataset(...)` at `image_size`.
      image_size: the letterboxed side.
      conf_thresh: detections scoring less are dropped.
      max_batches: stop after this many global batches (0: the whole split).
      grid: if a list, this process's first `grid_images` letterboxed val images are appended
        to it with their ground truth (red) and detections scoring at least `GRID_SCORE`
        (green) drawn (`image_grids.tile` makes the picture).
      grid_images: see `grid`.
    """
    size = image_size
    preds = {}
    for i, batch in enumerate(detection_pipeline.as_numpy_batches(dataset)):
        if max_batches and i >= max_batches:
            break
        inputs = sharding.shard_batch(batch, mesh, ('image',))
        mine = _process_rows(inputs['image'])
        out = jax.device_get(predict_fn(params, inputs))  # Replicated: the global batch.
        loc, conf = out['loc2'][mine], out['conf2'][mine]
        for j in np.flatnonzero(batch['_mask']):
            dets = postprocess.detections_from_outputs(
                loc[j], conf[j], anchors, (size, size), conf_thresh=conf_thresh
            )
            if grid is not None and len(grid) < grid_images:
                truth = image_grids.draw_boxes(
                    batch['image'][j], batch['boxes'][j][batch['box_mask'][j]], color=(255, 0, 0)
                )
                grid.append(image_grids.draw_boxes(truth, dets[dets[:, 4] >= GRID_SCORE, :4]))
            sx, sy = (float(v) for v in batch['scale'][j])
            dets[:, :4] /= np.array([sx, sy, sx, sy])
            preds[_key(batch['filename'][j])] = postprocess.to_wider_rows(dets)
    return allgather_predictions(preds)


def val_images(root: str) -> list[str]:
    """The val split's image names (`event/name.jpg`) in annotation-file order."""
    txt, _ = wider.split_paths(root, 'val')
    return [a.name for a in wider.read_bbx_gt(txt, allow_negative=True)]


def predict_multiscale(
    model: Any,
    params: Any,
    val_root: str,
    *,
    aspect_ratio: float,
    conf_thresh: float = 0.05,
    max_side: int = 0,
    max_images: int = 0,
) -> Predictions:
    """Multi-scale + flip + box-voting detections on the val split (`multiscale_test`).

    Each process takes every `process_count`-th image and runs the model on its first local
    device (the params are replicated, so every process holds them); one compile per padded
    input shape.

    Args:
      model: the DSFD module.
      params: its params.
      val_root: the WIDER-layout folder whose val split is detected.
      aspect_ratio: anchor height / width of the model.
      conf_thresh: detections scoring less are dropped.
      max_side: if > 0, caps the passes' longer side (CPU).
      max_images: if > 0, only the first `max_images` images of the split (a quick look).
    """
    names = val_images(val_root)
    if max_images:
        names = names[:max_images]
    mine = names[jax.process_index() :: jax.process_count()]
    # One host -> device copy of the params (replicated, so every process holds them), not one
    # per pass.
    local = jax.device_put(jax.device_get(params), jax.local_devices()[0])
    predict = multiscale_test.make_predict(model, local)
    _, images_dir = wider.split_paths(val_root, 'val')
    preds = {}
    for name in tqdm.tqdm(
        mine, desc='multi-scale test', unit='image', disable=jax.process_index() > 0
    ):
        path = root_paths.resolve_inside(images_dir, name, f'{images_dir} (val split)')
        dets = multiscale_test.detect_multiscale(
            images.read(path),
            predict,
            aspect_ratio=aspect_ratio,
            conf_thresh=conf_thresh,
            max_side=max_side or None,
        )
        preds[_key(name)] = postprocess.to_wider_rows(dets)
    return allgather_predictions(preds)


def average_precision(preds: Predictions, ground_truth: wider_mat.GroundTruth) -> dict[str, float]:
    """Easy / medium / hard AP (official protocol) of `preds`."""
    ap = wider_ap.evaluate(preds, ground_truth)
    return {k: float(ap[k]) for k in wider.SETTINGS}


def write_results(out_dir: str, preds: Predictions, results: dict[str, Any]) -> None:
    """Process 0 writes `<out_dir>/predictions/` (official layout) and `results.json`."""
    if jax.process_index() > 0:
        return
    wider.write_predictions(os.path.join(out_dir, 'predictions'), preds)
    atomic_io.write_text(
        os.path.join(out_dir, 'results.json'), json.dumps(results, indent=2) + '\n'
    )
