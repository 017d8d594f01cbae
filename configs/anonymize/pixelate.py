"""Pixelate every face box to 10 x 10 cells (paper Sec. IV-C).

  python launch/anonymize.py --config=configs/anonymize/pixelate.py:smoke
  python launch/anonymize.py --config=configs/anonymize/pixelate.py \
      --config.src=data/widerface --config.dst=data/widerface_pixelate

Options: `--config.anonymizer.cells=10`. Boxes no larger than the cells, which pixelation
cannot change, are blacked out and recorded `fallback:smaller_than_cells` (fails closed);
`--config.anonymizer.small_box=keep` leaves them as the paper's literal setting does
(`skipped:smaller_than_cells`; the leak audit lists them). See anonymize_base.py for the rest.
"""

import ml_collections

from configs.anonymize import anonymize_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return anonymize_base.get_base_config(arg, 'pixelate', cells=10, small_box='blackout')
