r"""Replace the face inside CIAGAN's landmark mask, for every face of at least 10 px (Sec. IV-C).

  python launch/train.py --config=configs/ciagan_celeba.py:smoke \
      --workdir=workdirs/ciagan_celeba_smoke           # exports <workdir>/generator
  python launch/anonymize.py --config=configs/anonymize/ciagan.py:smoke
  python tools/convert_torch_weights.py --format=ciagan --src=modelG.pth \
      --out=pretrained/ciagan                           # the original's released generator
  python launch/anonymize.py --config=configs/anonymize/ciagan.py \
      --config.anonymizer.params=pretrained/ciagan

Options: `--config.anonymizer.params=DIR` (a generator folder: a conversion or a training
workdir's `generator/`; `:smoke` defaults to the smoke training's), `keypoints` ('sidecar':
the synthetic set's exact 68 landmarks; 'dlib68': dlib's, fitted per box), `identity`
('random': a seeded random target identity per face, Safe Fakes; 'next': (source + 1) %
classes, the original's test.py, which needs per-face identities), `face_batch` (faces per
generator call). Faces narrower than 10 px are left as they are; faces without landmarks or
that fail are blacked out (`safefakes_jax/anonymizers/ciagan.py`). See anonymize_base.py for
the rest (`val`, `seed`, image format, workers).
"""

import ml_collections

from configs.anonymize import anonymize_base

SMOKE_GENERATOR = 'workdirs/ciagan_celeba_smoke/generator'
PAPER_GENERATOR = 'pretrained/ciagan'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = 'smoke' in (arg or '')
    config = anonymize_base.get_base_config(
        arg,
        'ciagan',
        params=SMOKE_GENERATOR if smoke else PAPER_GENERATOR,
        keypoints='sidecar' if smoke else 'dlib68',
        identity='random',
        face_batch=32,
    )
    config.workers = 2  # Decode / encode; the generator runs in the driver process.
    return config
