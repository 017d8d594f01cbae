"""Shared base of the dataset anonymization configs (one per method, `configs/anonymize/*.py`).

Not launched directly: `configs/anonymize/<method>.py` calls `get_base_config(arg, method,
**params)`. The output goes to `<src>_<method>`, where the DSFD configs look for it
(`cache/synthetic_wider_blur` for the synthetic set, `$WIDER_ROOT_blur` for the real one);
overriding `--config.src` moves the default dst along with it.

Args understood by every anonymize config (`--config=configs/anonymize/blur.py:smoke,val`):
  smoke: run on the synthetic WIDER FACE (`make demo` creates it) instead of the real one.
  seed: the seed of the per-image generators (conventional methods are deterministic).
  val: also anonymize the val split (the paper anonymizes the training set only).
"""

import ml_collections

from configs import dsfd_base
from safefakes_jax import config_utils


def get_base_config(arg: str | None, method: str, **params) -> ml_collections.ConfigDict:
    """The config that anonymizes a WIDER-layout folder with `method`(**params)."""
    arg = config_utils.parse_arg(arg, smoke=False, seed=0, val=False)
    config = ml_collections.ConfigDict()
    config.anonymizer = ml_collections.ConfigDict({'name': method, **params})
    config.src = dsfd_base.SYNTHETIC_ROOT if arg.smoke else dsfd_base.WIDER_ROOT
    config.dst = config.get_ref('src') + f'_{method}'
    config.splits = ('train', 'val') if arg.val else ('train',)
    config.workers = 0  # 0 = every core; 1 = in this process.
    config.seed = arg.seed
    config.image_format = 'jpeg'  # 'png': lossless, names become .png in the copied txt.
    config.jpeg_quality = 95
    config.png_compression = 3
    config.overwrite = False  # True: replace a dst written with other settings.
    # True: also copy landmarks/<split>.jsonl, which carries the ORIGINAL faces' geometry (68
    # landmarks; identity labels on the synthetic set) into the anonymized copy.
    config.copy_landmarks = False
    return config
