"""Black out every face box (paper Sec. IV-C, "black out" / "blocking").

  python launch/anonymize.py --config=configs/anonymize/blackout.py:smoke
  python launch/anonymize.py --config=configs/anonymize/blackout.py \
      --config.src=data/widerface --config.dst=data/widerface_blackout

Options: `--config.anonymizer.value=0` (grey level). See anonymize_base.py for the rest.
"""

import ml_collections

from configs.anonymize import anonymize_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return anonymize_base.get_base_config(arg, 'blackout', value=0)
