"""DSFD (VGG16) trained on WIDER FACE anonymized by the `deepprivacy` GAN (paper Fig. 4).

The deepprivacy anonymizer does not exist in safefakes_jax yet: `launch/train.py` with this config
stops before compiling and says so (it never trains on original faces instead). Once the
anonymizer exists:
  python launch/anonymize.py --config=configs/anonymize/deepprivacy.py
  python launch/train.py --config=configs/dsfd_deepprivacy.py --workdir=workdirs/dsfd_deepprivacy
Args (`:smoke`, `:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'deepprivacy')
