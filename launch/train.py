r"""Trains DSFD on a config's (anonymized) WIDER FACE train split and evaluates it on val.

Writes to `--workdir`: checkpoints/ (resumed automatically), config.json, TensorBoard events,
predictions/<event>/<image>.txt (official format) and results.json (easy/medium/hard AP).

  python launch/train.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/dsfd_smoke
  python launch/train.py --config=configs/dsfd_blur.py --workdir=workdirs/dsfd_blur \
      --config.train.steps=15000
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (path[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
_JAX_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False,
                                     'Call jax.distributed.initialize() (multi-host).')


def main(argv):
    del argv
    import jax

    if _JAX_DISTRIBUTED.value:
        jax.distributed.initialize()
    jax.config.update('jax_threefry_partitionable', True)

    from safefakes_jax.train import detector_trainer

    config = _CONFIG.value
    try:
        results = detector_trainer.train_and_evaluate(config, _WORKDIR.value)
    except (FileNotFoundError, detector_trainer.AnonymizerUnavailableError) as e:
        logging.error('%s', e)
        sys.exit(f'error: {e}')
    if 'stopped_at' in results:
        print(f'stopped at step {results["stopped_at"]} (checkpoint saved; rerun to resume)')
    else:
        print(f'AP easy {results["easy"]:.4f} medium {results["medium"]:.4f} '
              f'hard {results["hard"]:.4f} after {results["steps"]} steps; '
              f'wrote {os.path.join(_WORKDIR.value, "results.json")}')


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
