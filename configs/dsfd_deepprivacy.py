"""DSFD (VGG16) trained on WIDER FACE anonymized by the `deepprivacy` GAN (paper Fig. 4).

Make the anonymized set first (a missing set stops the run before compiling, naming the
command; it never trains on original faces instead):
  python launch/anonymize.py --config=configs/anonymize/deepprivacy.py
  python launch/train.py --config=configs/dsfd_deepprivacy.py --workdir=workdirs/dsfd_deepprivacy
On the synthetic set (after the smoke DeepPrivacy, `configs/deepprivacy_fdf.py:smoke`):
  python launch/anonymize.py --config=configs/anonymize/deepprivacy.py:smoke
  python launch/train.py --config=configs/dsfd_deepprivacy.py:smoke --workdir=/tmp/dsfd_dp
Args (`:smoke`, `:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'deepprivacy')
