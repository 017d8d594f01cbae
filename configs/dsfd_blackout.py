"""DSFD (VGG16) trained on WIDER FACE with every face anonymized by `blackout` (paper Fig. 4).

Create the anonymized training set first, then train (evaluation: the unaltered val split):
  python launch/anonymize.py --config=configs/anonymize/blackout.py:smoke
  python launch/train.py --config=configs/dsfd_blackout.py:smoke --workdir=/tmp/dsfd_blackout_smoke
  python launch/anonymize.py --config=configs/anonymize/blackout.py
  python launch/train.py --config=configs/dsfd_blackout.py --workdir=workdirs/dsfd_blackout
Args (`:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'blackout')
