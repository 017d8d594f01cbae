"""Blur every face box with a 25 x 25 box filter (paper Sec. IV-C), in the image's context.

  python launch/anonymize.py --config=configs/anonymize/blur.py:smoke
  python launch/anonymize.py --config=configs/anonymize/blur.py \
      --config.src=data/widerface --config.dst=data/widerface_blur

Options: `--config.anonymizer.kernel=25`, `--config.anonymizer.filter=gaussian` (odd kernel;
`--config.anonymizer.sigma=0` derives sigma from the kernel). See anonymize_base.py for the
rest (`val`, `seed`, image format, workers).
"""

import ml_collections

from configs.anonymize import anonymize_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return anonymize_base.get_base_config(arg, 'blur', kernel=25, filter='box', sigma=0.0)
