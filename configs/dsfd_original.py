"""DSFD (VGG16) trained on the original (non-anonymized) WIDER FACE train split.

Launch (the detector trainer comes with the DSFD issue; today the data path runs):
  python launch/inspect_data.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/inspect
  python launch/train.py --config=configs/dsfd_original.py --workdir=workdirs/dsfd_original
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'original')
