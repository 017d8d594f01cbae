"""DSFD (VGG16) trained on WIDER FACE with every face anonymized by `fullblur` (paper Fig. 4).

Create the anonymized training set first, then train (evaluation: the unaltered val split):
  python launch/anonymize.py --config=configs/anonymize/fullblur.py:smoke
  python launch/train.py --config=configs/dsfd_fullblur.py:smoke --workdir=/tmp/dsfd_fullblur_smoke
  python launch/anonymize.py --config=configs/anonymize/fullblur.py
  python launch/train.py --config=configs/dsfd_fullblur.py --workdir=workdirs/dsfd_fullblur
Args (`:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'fullblur')
