"""DeepPrivacy trained on the full FDF (1.47M faces; paper: 40M images).

  python launch/train.py --config=configs/deepprivacy_fdf.py --workdir=workdirs/deepprivacy_fdf
  python launch/train.py --config=configs/deepprivacy_fdf.py:smoke --workdir=/tmp/dp_smoke
Args (`:smoke`, `:tiny`, `:images=4000000`, `:seed=1`): see deepprivacy_base.py.
"""

import ml_collections

from configs import deepprivacy_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return deepprivacy_base.get_base_config(arg, 'fdf')
