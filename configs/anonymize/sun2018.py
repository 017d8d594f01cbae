r"""Replace every face of at least 10 px with Sun2018's head inpainting (paper Sec. IV-C).

  python launch/train.py --config=configs/sun2018_pipa.py:smoke \
      --workdir=workdirs/sun2018_pipa_smoke              # exports <workdir>/generator
  python launch/anonymize.py --config=configs/anonymize/sun2018.py:smoke
  python launch/train.py --config=configs/sun2018_pipa.py --workdir=workdirs/sun2018_pipa
  python launch/anonymize.py --config=configs/anonymize/sun2018.py

Options: `--config.anonymizer.params=DIR` (a training workdir's `generator/`; `:smoke` defaults
to the smoke training's), `keypoints` (the 68 landmarks: 'sidecar', the synthetic set's exact
ones; 'dlib68', dlib's, as the paper; 'none': empty landmark maps, every face recorded
`anonymized:no_landmarks`), `face_batch` (faces per generator call). Faces narrower than 10 px
are left as they are, faces the generator cannot handle are blacked out
(`safefakes_jax/anonymizers/sun2018.py`). See anonymize_base.py for the rest (`val`, `seed`,
image format, workers).
"""

import ml_collections

from configs.anonymize import anonymize_base

SMOKE_GENERATOR = 'workdirs/sun2018_pipa_smoke/generator'
PAPER_GENERATOR = 'workdirs/sun2018_pipa/generator'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = 'smoke' in (arg or '')
    config = anonymize_base.get_base_config(
        arg,
        'sun2018',
        params=SMOKE_GENERATOR if smoke else PAPER_GENERATOR,
        keypoints='sidecar' if smoke else 'dlib68',
        face_batch=32,
    )
    config.workers = 2  # Decode / encode; the generator runs in the driver process.
    return config
