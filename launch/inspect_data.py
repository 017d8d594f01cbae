r"""Runs a config's training input pipeline and shows what the detector will see.

Prepares the TFDS copy of `config.data.train_root` (offline), pulls `--num_batches` augmented
batches, reports images/s, and writes to `--workdir`:
  augmented_batch.png   the first batch with its (padded-away) boxes drawn
  TensorBoard events    the same grid as an image summary, and the pipeline throughput

  python launch/inspect_data.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/inspect
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 20, 'Batches to pull.')


def main(argv):
    del argv
    import numpy as np
    import tqdm
    from clu import metric_writers

    from safefakes_jax.data import detection_pipeline, wider
    from safefakes_jax.evaluation import image_grids

    config = _CONFIG.value
    root = config.data.train_root
    wider.require_split(
        root,
        'train',
        how_to_create=(
            f'python tools/make_synthetic_wider.py --out {root}'
            if 'synthetic' in root
            else 'see README.md, "Real WIDER FACE" (anonymized copies: the anonymization engine)'
        ),
    )
    ds = detection_pipeline.make_train_dataset(
        root,
        batch_size=config.data.batch_size,
        image_size=config.data.image_size,
        max_boxes=config.data.max_boxes,
        seed=config.seed,
        anchor_sampling_prob=config.data.anchor_sampling_prob,
        shuffle_buffer=config.data.shuffle_buffer,
        data_dir=config.data.tfds_dir or None,
    )
    it = ds.as_numpy_iterator()
    first = next(it)  # Preparing TFDS and warming up are not part of the throughput.
    start, n_images, n_faces = time.perf_counter(), 0, 0
    for batch in tqdm.tqdm(it, total=_NUM_BATCHES.value, desc='batches', unit='batch'):
        n_images += len(batch['image'])
        n_faces += int(batch['box_mask'].sum())
        if n_images >= _NUM_BATCHES.value * config.data.batch_size:
            break
    images_per_s = n_images / (time.perf_counter() - start)

    drawn = [
        image_grids.draw_boxes(im, boxes[mask])
        for im, boxes, mask in zip(first['image'], first['boxes'], first['box_mask'], strict=True)
    ]
    grid = image_grids.tile(drawn)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    image_grids.save_png(os.path.join(_WORKDIR.value, 'augmented_batch.png'), grid)
    writer = metric_writers.create_default_writer(_WORKDIR.value)
    writer.write_images(0, {'augmented_batch': grid[None]})
    writer.write_scalars(
        0, {'input/images_per_s': images_per_s, 'input/faces_per_image': n_faces / max(n_images, 1)}
    )
    writer.flush()
    print(
        f'{n_images} images ({n_faces} faces) at {images_per_s:.1f} images/s, '
        f'{config.data.image_size}x{config.data.image_size}, batch {config.data.batch_size}; '
        f'mean faces/image {n_faces / max(n_images, 1):.1f}; boxes per batch padded to '
        f'{config.data.max_boxes} (max seen {int(np.max(first["box_mask"].sum(1)))})'
    )
    print(f'wrote {os.path.join(_WORKDIR.value, "augmented_batch.png")} and TensorBoard events')


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
