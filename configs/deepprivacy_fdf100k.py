r"""DeepPrivacy trained on a seeded 100k-face subset of FDF (paper Fig. 7).

  python launch/train.py --config=configs/deepprivacy_fdf100k.py \
      --workdir=workdirs/deepprivacy_fdf100k
  python launch/train.py --config=configs/deepprivacy_fdf100k.py:smoke --workdir=/tmp/dp_smoke
Args (`:smoke`, `:tiny`, `:images=4000000`, `:seed=1`): see deepprivacy_base.py.
"""

import ml_collections

from configs import deepprivacy_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return deepprivacy_base.get_base_config(arg, 'fdf100k')
