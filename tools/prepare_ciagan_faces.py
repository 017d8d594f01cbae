r"""Writes CIAGAN's training faces (`safefakes_jax.data.ciagan_sets.CiaganFaces`) to an .npz.

  python tools/prepare_ciagan_faces.py --celeba=data/celeba --out=cache/ciagan/celeba_128.npz \
      [--identities=ciagan/dataset/celeba/legit_indices.npy]
  python tools/prepare_ciagan_faces.py --wider=cache/synthetic_wider --split=train \
      --out=cache/ciagan/synthetic_train_128.npz [--resolution=128] [--min_face_px=24]

CelebA: the identities of --identities (the original's `dataset/celeba/legit_indices.npy`, in
its order), else those with at least --min_faces images; the first --num_identities of them;
landmarks from dlib's frontal detector (upsample 1, first face) and its
68-point predictor, as the original's process_data.py; images without a face are skipped and
counted. The synthetic set: its exact sidecar landmarks and identities; for --split=val, pass
--train_faces=FILE to map identities as that train file does (unknown ones become -1).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags  # noqa: E402

from safefakes_jax.data import ciagan_sets  # noqa: E402

_CELEBA = flags.DEFINE_string('celeba', None, 'CelebA folder (img_align_celeba/, lists)')
_WIDER = flags.DEFINE_string('wider', None, 'WIDER-layout folder with a landmarks sidecar')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'val'], 'WIDER split')
_OUT = flags.DEFINE_string('out', None, 'output .npz', required=True)
_RESOLUTION = flags.DEFINE_integer('resolution', 128, 'R; faces are stored at int(R * 1.125)')
_MIN_FACE_PX = flags.DEFINE_integer('min_face_px', 24, 'WIDER: narrowest face kept')
_TRAIN_FACES = flags.DEFINE_string('train_faces', None, 'WIDER val: the train .npz (classes)')
_MIN_FACES = flags.DEFINE_integer('min_faces', 30, 'CelebA: fewest images per identity')
_NUM_IDS = flags.DEFINE_integer('num_identities', 1200, 'CelebA: identities kept')
_PARTITION = flags.DEFINE_enum('partition', 'all', ['all', 'train', 'val', 'test'], 'CelebA')
_IDENTITIES = flags.DEFINE_string(
    'identities', None, "CelebA: the original's dataset/celeba/legit_indices.npy (class order)"
)
_THREADS = flags.DEFINE_integer('threads', 2, 'worker threads')


def dlib_landmarker():
    """The original's landmarks: frontal detector (upsample 1), first face, 68 points; one
    detector / predictor per thread (dlib objects are not documented as thread safe)."""
    from safefakes_jax.anonymizers import keypoints

    local = threading.local()

    def landmarks(image: np.ndarray) -> np.ndarray | None:
        if not hasattr(local, 'models'):
            dlib, _, _ = keypoints._dlib_models()
            local.models = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(keypoints.model_file()),
            )
        detector, predictor = local.models
        faces = detector(image, 1)
        if not faces:
            return None
        shape = predictor(image, faces[0])
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    return landmarks


def main(argv: list[str]) -> int:
    del argv
    logging.getLogger('absl').setLevel(logging.WARNING)
    if (_CELEBA.value is None) == (_WIDER.value is None):
        raise app.UsageError('give exactly one of --celeba and --wider')
    bar = tqdm.tqdm(unit='img', desc='ciagan faces')
    if _CELEBA.value:
        faces = ciagan_sets.read_celeba(
            _CELEBA.value,
            dlib_landmarker(),
            _RESOLUTION.value,
            min_faces=_MIN_FACES.value,
            num_identities=_NUM_IDS.value,
            partition=_PARTITION.value,
            identities=(
                np.load(_IDENTITIES.value, allow_pickle=False) if _IDENTITIES.value else None
            ),
            threads=_THREADS.value,
            progress=bar.update,
        )
    else:
        names = None
        if _TRAIN_FACES.value:
            names = ciagan_sets.CiaganFaces.load(_TRAIN_FACES.value).identity_names
        faces = ciagan_sets.build_wider_faces(
            _WIDER.value,
            _SPLIT.value,
            _RESOLUTION.value,
            min_face_px=_MIN_FACE_PX.value,
            identity_names=names,
            threads=_THREADS.value,
            progress=bar.update,
        )
    bar.close()
    faces.save(_OUT.value)
    print(
        f'{_OUT.value}: {len(faces)} faces, {faces.num_classes} identities, '
        f'{faces.side} px squares; skipped {faces.skipped}'
    )
    return 0


if __name__ == '__main__':
    app.run(main)
