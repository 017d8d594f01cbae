r"""Replace every face of at least 10 px with DeepPrivacy (paper Sec. IV-C), pasted into its box.

  python launch/train.py --config=configs/deepprivacy_fdf.py:smoke \
      --workdir=workdirs/deepprivacy_fdf_smoke           # exports <workdir>/generator
  python launch/anonymize.py --config=configs/anonymize/deepprivacy.py:smoke
  python tools/convert_torch_weights.py --format=deepprivacy_v1 --src=checkpoint.ckpt \
      --out=pretrained/deepprivacy_v1                    # the original ISVC'19 weights
  python launch/anonymize.py --config=configs/anonymize/deepprivacy.py \
      --config.anonymizer.params=pretrained/deepprivacy_v1 --config.anonymizer.keypoints=dlib68

Options: `--config.anonymizer.params=DIR` (a generator folder: a conversion or a training
workdir's `generator/`; `:smoke` defaults to the smoke training's), `keypoints` ('sidecar':
the synthetic set's exact keypoints; 'dlib68': dlib landmarks mapped to DeepPrivacy's 7;
'coco_json' with `keypoints_path=FILE`: a COCO-keypoints JSON of the set's people, by WIDER
image name; 'none': empty keypoint maps), `z` ('zero', DeepPrivacy's inference; 'random'),
`face_batch` (faces per generator call). Faces narrower than 10 px are left as they are, faces the
generator cannot handle are blacked out (`safefakes_jax/anonymizers/deepprivacy.py`). See
anonymize_base.py for the rest (`val`, `seed`, image format, workers).
"""

import ml_collections

from configs.anonymize import anonymize_base

SMOKE_GENERATOR = 'workdirs/deepprivacy_fdf_smoke/generator'
PAPER_GENERATOR = 'pretrained/deepprivacy_v1'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = 'smoke' in (arg or '')
    config = anonymize_base.get_base_config(
        arg,
        'deepprivacy',
        params=SMOKE_GENERATOR if smoke else PAPER_GENERATOR,
        keypoints='sidecar' if smoke else 'dlib68',
        keypoints_path='',
        z='zero',
        face_batch=32,
    )
    config.workers = 2  # Decode / encode; the generator runs in the driver process.
    return config
