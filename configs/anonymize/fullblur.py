"""Blur the whole image with an 18 x 18 box filter (paper Sec. IV-C, "Fullblur").

  python launch/anonymize.py --config=configs/anonymize/fullblur.py:smoke
  python launch/anonymize.py --config=configs/anonymize/fullblur.py \
      --config.src=data/widerface --config.dst=data/widerface_fullblur

Options: `--config.anonymizer.kernel=18`, `--config.anonymizer.filter=gaussian` (odd kernel
only). See anonymize_base.py for the rest.
"""

import ml_collections

from configs.anonymize import anonymize_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return anonymize_base.get_base_config(arg, 'fullblur', kernel=18, filter='box', sigma=0.0)
