"""DeepPrivacy trained on PIPA face crops (38k faces) prepared in the FDF layout (paper Fig. 7).

  python launch/train.py --config=configs/deepprivacy_pipa.py --workdir=workdirs/deepprivacy_pipa
  python launch/train.py --config=configs/deepprivacy_pipa.py:smoke --workdir=/tmp/dp_smoke
Args (`:smoke`, `:tiny`, `:images=4000000`, `:seed=1`): see deepprivacy_base.py.
"""

import ml_collections

from configs import deepprivacy_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return deepprivacy_base.get_base_config(arg, 'pipa')
