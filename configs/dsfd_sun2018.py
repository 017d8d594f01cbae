"""DSFD (VGG16) trained on WIDER FACE anonymized by the `sun2018` GAN (paper Fig. 4).

The sun2018 anonymizer does not exist in safefakes_jax yet: `launch/train.py` with this config
stops before compiling and says so (it never trains on original faces instead). Once the
anonymizer exists:
  python launch/anonymize.py --config=configs/anonymize/sun2018.py
  python launch/train.py --config=configs/dsfd_sun2018.py --workdir=workdirs/dsfd_sun2018
Args (`:smoke`, `:steps=7500`, `:paper`, `:seed=1`): see dsfd_base.py.
"""

import ml_collections

from configs import dsfd_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dsfd_base.get_base_config(arg, 'sun2018')
