r"""DSFD (VGG16) trained on WIDER FACE anonymized by the `sun2018` GAN (paper Fig. 4).

Train the generator, then make the anonymized set (a missing set stops the run before
compiling, naming the command; it never trains on original faces instead):
  python launch/train.py --config=configs/sun2018_pipa.py --workdir=workdirs/sun2018_pipa
  python launch/anonymize.py --config=configs/anonymize/sun2018.py
  python launch/train.py --config=configs/dsfd_sun2018.py --workdir=workdirs/dsfd_sun2018
On the synthetic set (the smoke Sun2018 exports workdirs/sun2018_pipa_smoke/generator):
  python launch/train.py --config=configs/sun2018_pipa.py:smoke \
      --workdir=workdirs/sun2018_pipa_smoke
  python launch/anonymize.py --config=configs/anonymize/sun2018.py:smoke
  python launch/train.py --config=configs/dsfd_sun2018.py:smoke --workdir=/tmp/dsfd_sun2018
Args (`:smoke`, `:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'sun2018')
