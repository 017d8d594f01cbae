"""tf.data input pipelines for face-detector training and evaluation on WIDER-layout folders.

Both pipelines read the TFRecords that `tfds_wider` prepares from a WIDER-layout folder, one
shard per host (`tfds.even_splits` by `jax.process_index()` / `jax.process_count()`), and yield
dicts of fixed-shape batches (see `make_train_dataset` and `make_eval_dataset`). `batch_size`
is always the per-host batch (global batch // process count).

Box convention: `boxes` are float32 `x1 y1 x2 y2` in pixels of the output image (the S x S
network input), padded with zero rows to `max_boxes`; `box_mask` marks the real rows. Divide
by S for the normalised boxes of the DSFD matcher.

Training follows the DSFD augmentation of yxlijun/DSFD.pytorch (`detection_augment`, dsfd.md
§7). The host's examples form an endless stream; example `j` of epoch `e` has the *position*
`e * n + j` (n = examples on this host). Epoch `e` is shuffled with a seed derived from
`(seed, e)`, and every random choice of an example (crop, interpolation, mirror, photometric)
comes from a numpy generator seeded with `(seed, process_index, position)`. So the same seed
gives the same batches whatever the thread scheduling, and a run restarted with
`start_position` = 1 + the last position it trained on (each batch carries its `position`s)
continues with exactly the batches an uninterrupted run would have seen; it skips at most one
epoch of undecoded records to get there. The geometry is drawn from the boxes alone; only the
part of the JPEG inside the crop window is decoded (`tf.io.decode_and_crop_jpeg`, which runs
without the GIL) and it is resized once, straight to S x S. PNG images (lossless anonymized
copies) are decoded whole with `tf.io.decode_png` and then cropped.

Shuffling: a buffer of `shuffle_buffer` examples over the records in their on-disk order, which
TFDS already permuted by a hash of the file name when it prepared the folder (so WIDER's
event-sorted order does not leak into batches). Files are read in a fixed order, which keeps
the stream a pure function of `(seed, position)`.

Deviations from the reference pipeline, besides those listed in `detection_augment`: images
without faces are skipped (as the reference's training list does; they keep their positions),
and an example may end up with no boxes after cropping (the reference resamples another image
instead).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from safefakes_jax.data import detection_augment as aug
from safefakes_jax.data import tfds_wider

DEFAULT_MAX_BOXES = 256


def host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """(index, count) of this host; the JAX values unless both are given."""
    if process_index is None or process_count is None:
        import jax  # Lazy: the pipeline itself needs no JAX.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    return int(process_index), int(process_count)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Parallelism comes from many examples in flight; single-threaded ops avoid
    # oversubscribing the (few) host cores that also feed the accelerator.
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = True
    return options


def _read_host_split(
    root, split: str, data_dir, process_index: int, process_count: int
) -> tuple[tf.data.Dataset, int]:
    """This host's examples in on-disk order (image bytes undecoded) and the split's size."""
    builder = tfds_wider.prepare(root, data_dir)
    tfds_wider.check_split(builder, split)
    split = tfds_wider.tfds_split(split)
    total = builder.info.splits[split].num_examples
    host_split = tfds.even_splits(split, process_count)[process_index]
    # No autocache: the training stream re-reads the records once per epoch by design.
    read_config = tfds.ReadConfig(try_autocache=False)
    ds = builder.as_dataset(
        split=host_split,
        decoders={'image': tfds.decode.SkipDecoding()},
        shuffle_files=False,
        read_config=read_config,
    )
    return ds, total


def _select(ex: dict) -> dict:
    """The fields the pipelines use; boxes as normalised `x1 y1 x2 y2`."""
    yx = ex['faces']['bbox']
    return {
        'encoded': ex['image'],
        'format': ex['image/format'],
        'boxes': tf.gather(yx, [1, 0, 3, 2], axis=1),
        'width': ex['width'],
        'height': ex['height'],
        'filename': ex['image/filename'],
    }


# --------------------------------------------------------------------------- training


def _geometry_np(
    position,
    boxes,
    width,
    height,
    *,
    seed,
    process_index,
    image_size,
    max_boxes,
    augment,
    anchor_sampling_prob,
    min_face_px,
):
    """numpy_function body: the random geometry of one example, from the boxes alone."""
    width, height = int(width), int(height)
    rng = np.random.default_rng([seed, process_index, int(position)])
    boxes_px = boxes.astype(np.float64) * [width, height, width, height]
    g = aug.sample_geometry(
        boxes_px,
        width,
        height,
        rng,
        out_size=image_size,
        anchor_sampling_prob=anchor_sampling_prob,
        min_face_px=min_face_px,
        augment=augment,
    )
    padded, n = aug.pad_boxes(g.boxes, max_boxes)
    return (
        g.window.astype(np.int32),
        padded,
        np.int32(n),
        np.int32(g.interpolation),
        np.bool_(g.mirror),
        g.photometric.astype(np.float32),
    )


def _render_np(crop, window, origin, interpolation, mirror, photometric, *, image_size, pad_value):
    """numpy_function body: crop pixels -> the S x S augmented image."""
    return aug.render(
        crop,
        window,
        (int(origin[0]), int(origin[1])),
        image_size,
        int(interpolation),
        bool(mirror),
        photometric,
        pad_value,
    )


def _decode_crop(encoded, fmt, y0, x0, height, width) -> tf.Tensor:
    """The window `[y0:y0+height, x0:x0+width]` of a JPEG (decoding only that part) or PNG."""
    return tf.cond(
        tf.equal(fmt, 'png'),
        lambda: tf.io.decode_png(encoded, channels=3)[y0 : y0 + height, x0 : x0 + width],
        lambda: tf.io.decode_and_crop_jpeg(encoded, tf.stack([y0, x0, height, width]), channels=3),
    )


def _decode(encoded, fmt) -> tf.Tensor:
    """The whole JPEG or PNG image, uint8 [H, W, 3]."""
    return tf.cond(
        tf.equal(fmt, 'png'),
        lambda: tf.io.decode_png(encoded, channels=3),
        lambda: tf.io.decode_jpeg(encoded, channels=3),
    )


def _augment(position, ex, *, geometry_fn, render_fn, image_size: int, max_boxes: int) -> dict:
    window, boxes, n, interp, mirror, photometric = tf.numpy_function(
        geometry_fn,
        [position, ex['boxes'], ex['width'], ex['height']],
        [tf.int32, tf.float32, tf.int32, tf.int32, tf.bool, tf.float32],
        stateful=False,
    )
    # Decode only the part of the image inside the window (the rest is padding or cropped away).
    x0 = tf.maximum(window[0], 0)
    y0 = tf.maximum(window[1], 0)
    x1 = tf.minimum(window[2], ex['width'])
    y1 = tf.minimum(window[3], ex['height'])
    crop = _decode_crop(ex['encoded'], ex['format'], y0, x0, y1 - y0, x1 - x0)
    image = tf.numpy_function(
        render_fn,
        [crop, window, tf.stack([x0, y0]), interp, mirror, photometric],
        tf.uint8,
        stateful=False,
    )
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    boxes = tf.ensure_shape(boxes, [max_boxes, 4])
    return {
        'image': image,
        'boxes': boxes,
        'box_mask': tf.range(max_boxes) < tf.ensure_shape(n, []),
        'filename': ex['filename'],
        'position': position,
    }


def _epoch_shuffle_seed(seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """A well-mixed int64 shuffle seed for `(seed, epoch)`."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], pair, minval=0, maxval=2**62, dtype=tf.int64)


def make_train_dataset(
    root: str | os.PathLike,
    *,
    batch_size: int,
    image_size: int = 640,
    max_boxes: int = DEFAULT_MAX_BOXES,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    augment: bool = True,
    anchor_sampling_prob: float = 0.4,
    min_face_px: float = 6.0,
    shuffle_buffer: int = 1000,
    start_position: int = 0,
    split: str = 'train',
    pad_value: tuple[int, int, int] = aug.RGB_MEAN,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
    """The infinite, shuffled, augmented training pipeline of one host.

    Args:
      root: a WIDER-layout folder (prepared with `tfds_wider` on first use).
      batch_size: per-host batch (global batch // process count).
      image_size: output side S.
      max_boxes: boxes per image after augmentation; the largest are kept beyond it.
      seed: seeds the shuffle and every example's augmentation.
      data_dir: TFDS data_dir (default: see `tfds_wider`).
      augment: False: whole image stretched to S x S, no distortion, no mirror.
      anchor_sampling_prob: probability of data-anchor-sampling (paper 2/5, reference 1/2);
        SSD-style square crops otherwise.
      min_face_px: faces with an area under this squared at output scale are dropped.
      shuffle_buffer: examples in the shuffle buffer (encoded JPEGs, ~150 kB each for WIDER).
      start_position: first stream position to yield (resume: 1 + the largest `position`
        already trained on by this host).
      split: 'train' or 'val' (or a TFDS slice).
      pad_value: RGB colour outside the source image (DAS crops past the top/left edge).
      process_index: this host (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).

    Returns:
      Batches `{'image': uint8 [B, S, S, 3] RGB, 'boxes': float32 [B, max_boxes, 4] x1 y1 x2 y2
      in output pixels, 'box_mask': bool [B, max_boxes], 'filename': string [B], 'position':
      int64 [B]}` with static shapes, repeated forever.
    """
    pi, pc = host(process_index, process_count)
    records, _ = _read_host_split(root, split, data_dir, pi, pc)
    n = int(records.cardinality())
    if n < 0:  # Unknown cardinality (not expected from TFDS): count once.
        n = int(records.reduce(0, lambda count, _: count + 1))
    if n == 0:
        raise ValueError(f'{root}: host {pi} of {pc} has no {split!r} examples')
    records = records.map(_select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def epoch(e):
        ds = records
        if shuffle_buffer > 1:
            ds = ds.shuffle(
                shuffle_buffer, seed=_epoch_shuffle_seed(seed, e), reshuffle_each_iteration=False
            )
        return ds.enumerate(start=e * n)

    first_epoch, offset = divmod(int(start_position), n)
    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
    if offset:
        ds = ds.skip(offset)  # Cheap: records are not decoded before the augmentation map.
    ds = ds.filter(lambda position, ex: tf.shape(ex['boxes'])[0] > 0)
    geometry_fn = functools.partial(
        _geometry_np,
        seed=int(seed),
        process_index=pi,
        image_size=image_size,
        max_boxes=max_boxes,
        augment=augment,
        anchor_sampling_prob=anchor_sampling_prob,
        min_face_px=min_face_px,
    )
    render_fn = functools.partial(_render_np, image_size=image_size, pad_value=pad_value)
    ds = ds.map(
        functools.partial(
            _augment,
            geometry_fn=geometry_fn,
            render_fn=render_fn,
            image_size=image_size,
            max_boxes=max_boxes,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


# --------------------------------------------------------------------------- evaluation


def _pad_boxes_np(boxes, max_boxes):
    padded, n = aug.pad_boxes(boxes, int(max_boxes))
    return padded, np.int32(n)


def _eval_example(ex: dict, *, image_size: int, max_boxes: int, letterbox: bool) -> dict:
    image = _decode(ex['encoded'], ex['format'])
    width = tf.cast(ex['width'], tf.float32)
    height = tf.cast(ex['height'], tf.float32)
    if letterbox:
        scale = image_size / tf.maximum(width, height)
        new_w = tf.clip_by_value(tf.round(width * scale), 1, image_size)
        new_h = tf.clip_by_value(tf.round(height * scale), 1, image_size)
    else:
        new_w = new_h = tf.constant(float(image_size))
    # Bilinear without antialiasing, like the reference's test-time cv2 INTER_LINEAR.
    image = tf.image.resize(image, tf.cast(tf.stack([new_h, new_w]), tf.int32), 'bilinear')
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)
    sx, sy = new_w / width, new_h / height
    boxes = ex['boxes'] * tf.stack([width * sx, height * sy, width * sx, height * sy])
    boxes, n = tf.numpy_function(
        _pad_boxes_np, [boxes, max_boxes], [tf.float32, tf.int32], stateful=False
    )
    return {
        'image': tf.ensure_shape(image, [image_size, image_size, 3]),
        'boxes': tf.ensure_shape(boxes, [max_boxes, 4]),
        'box_mask': tf.range(max_boxes) < tf.ensure_shape(n, []),
        'orig_size': tf.stack([ex['height'], ex['width']]),
        'scale': tf.stack([sx, sy]),
        'filename': ex['filename'],
        '_mask': tf.constant(True),
    }


def _padding_example(image_size: int, max_boxes: int) -> dict:
    return {
        'image': tf.zeros([image_size, image_size, 3], tf.uint8),
        'boxes': tf.zeros([max_boxes, 4], tf.float32),
        'box_mask': tf.zeros([max_boxes], tf.bool),
        'orig_size': tf.zeros([2], tf.int32),
        'scale': tf.ones([2], tf.float32),  # Ones: mapping padding back never divides by 0.
        'filename': tf.constant(''),
        '_mask': tf.constant(False),
    }


def num_eval_batches(num_examples: int, batch_size: int, process_count: int) -> int:
    """Batches every host yields for a split of `num_examples` (the same on all hosts)."""
    return max(1, math.ceil(math.ceil(num_examples / process_count) / batch_size))


def make_eval_dataset(
    root: str | os.PathLike,
    *,
    batch_size: int,
    image_size: int = 640,
    max_boxes: int = DEFAULT_MAX_BOXES,
    split: str = 'val',
    data_dir: str | os.PathLike | None = None,
    letterbox: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
    """The finite, unaugmented evaluation pipeline of one host, in file order.

    Every host yields `num_eval_batches(...)` batches (the same number, so that collective
    evaluation steps line up); the last ones are filled with padding examples, `_mask` False.

    Args:
      root: a WIDER-layout folder.
      batch_size: per-host batch.
      image_size: output side S.
      max_boxes: boxes per image; the largest are kept beyond it.
      split: 'val' (default), 'train', or a TFDS slice.
      data_dir: TFDS data_dir (default: see `tfds_wider`).
      letterbox: keep the aspect ratio (image at the top-left, zero padding right/bottom);
        False stretches the image to S x S.
      process_index: this host (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).

    Returns:
      Batches `{'image': uint8 [B, S, S, 3], 'boxes': float32 [B, max_boxes, 4] x1 y1 x2 y2 in
      output pixels, 'box_mask': bool [B, max_boxes], 'orig_size': int32 [B, 2] (height,
      width) of the source image, 'scale': float32 [B, 2] (sx, sy) output pixels per source
      pixel, 'filename': string [B], '_mask': bool [B]}`. Source boxes are
      `boxes / [sx, sy, sx, sy]`.
    """
    pi, pc = host(process_index, process_count)
    ds, total = _read_host_split(root, split, data_dir, pi, pc)
    ds = ds.map(_select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(
        functools.partial(
            _eval_example, image_size=image_size, max_boxes=max_boxes, letterbox=letterbox
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    n_batches = num_eval_batches(total, batch_size, pc)
    padding = tf.data.Dataset.from_tensors(_padding_example(image_size, max_boxes)).repeat()
    ds = ds.concatenate(padding).take(n_batches * batch_size)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def as_numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Iterates `ds` as dicts of numpy arrays (strings as `bytes` object arrays)."""
    yield from tfds.as_numpy(ds)
