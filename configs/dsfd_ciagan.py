r"""DSFD (VGG16) trained on WIDER FACE anonymized by the `ciagan` GAN (paper Fig. 4).

Train the generator (or convert the original's), make the anonymized set, train DSFD (a missing
set stops the run before compiling, naming the command; it never trains on original faces):
  python launch/train.py --config=configs/ciagan_celeba.py --workdir=workdirs/ciagan_celeba
  python launch/anonymize.py --config=configs/anonymize/ciagan.py
  python launch/train.py --config=configs/dsfd_ciagan.py --workdir=workdirs/dsfd_ciagan
On the synthetic set (the smoke CIAGAN exports workdirs/ciagan_celeba_smoke/generator):
  python launch/train.py --config=configs/ciagan_celeba.py:smoke \
      --workdir=workdirs/ciagan_celeba_smoke
  python launch/anonymize.py --config=configs/anonymize/ciagan.py:smoke
  python launch/train.py --config=configs/dsfd_ciagan.py:smoke --workdir=workdirs/dsfd_ciagan
Args (`:smoke`, `:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'ciagan')
