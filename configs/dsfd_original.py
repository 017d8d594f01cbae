"""DSFD (VGG16) trained on the original (non-anonymized) WIDER FACE train split.

  python launch/train.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/dsfd_smoke
  python launch/train.py --config=configs/dsfd_original.py --workdir=workdirs/dsfd_original
  python launch/train.py --config=configs/dsfd_original.py:steps=7500 --workdir=...
Args (`:smoke`, `:steps=N`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'original')
