r"""Trains a config's network: DSFD (the default) or a GAN anonymizer (`config.trainer`).

DSFD trains on a config's (anonymized) WIDER FACE train split and is evaluated on val;
The GANs (`configs/deepprivacy_*.py`, `configs/ciagan_celeba.py`, `configs/sun2018_pipa.py`)
train on face crops and are evaluated on held-out crops (`train/<trainer>_trainer.py`).

Writes to `--workdir`: checkpoints/ (resumed automatically), config.json, TensorBoard events,
predictions/<event>/<image>.txt (official format) and results.json (easy/medium/hard AP).
A workdir holding a run of another config (its config.json differs, or it has checkpoints but
no config.json) is refused before anything is written, listing the differing keys;
`--config.resume_with_changed_config=true` continues it and records the change in
config_changes.json. Set-up errors (missing data, refused workdir, bad config) print one line
`error: ...` and exit with status 2.

  python launch/train.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/dsfd_smoke
  python launch/train.py --config=configs/dsfd_blur.py --workdir=workdirs/dsfd_blur \
      --config.train.steps=15000
  python launch/train.py --config=configs/deepprivacy_fdf.py:smoke --workdir=/tmp/dp_smoke
  python launch/train.py --config=configs/ciagan_celeba.py:smoke --workdir=/tmp/ciagan_smoke
  python launch/train.py --config=configs/sun2018_pipa.py:smoke --workdir=/tmp/sun2018_smoke

Multi-process (README, "Scaling out"): `--jax_distributed` alone lets
`jax.distributed.initialize()` detect the cluster (TPU pod slice, SLURM, ...); elsewhere start
one process per host with the coordinator given explicitly, e.g. two processes on loopback:

  python launch/train.py --config=... --workdir=... --coordinator_address=127.0.0.1:12345 \
      --num_processes=2 --process_id=0   # and --process_id=1 in a second shell
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# config.trainer -> safefakes_jax/train/<name>_trainer.py (`train_and_evaluate`).
TRAINERS = ('detector', 'deepprivacy', 'ciagan', 'sun2018')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
_JAX_DISTRIBUTED = flags.DEFINE_bool(
    'jax_distributed',
    False,
    'Call jax.distributed.initialize() (multi-process); without the three flags below the '
    'cluster is auto-detected (TPU pod slice, SLURM, Open MPI, ...).',
)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of process 0, the same for every process (implies --jax_distributed).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes of the run (implies --jax_distributed).'
)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, 0 .. num_processes - 1 (implies --jax_distributed).'
)


def main(argv):
    del argv
    import jax

    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _JAX_DISTRIBUTED.value or any(v is not None for v in explicit):
        # A flag left out (None) is auto-detected. CPU collectives across processes use gloo
        # (jax's default `jax_cpu_collectives_implementation`): CPU runs need no extra setting.
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    jax.config.update('jax_threefry_partitionable', True)

    from safefakes_jax.train import detector_trainer

    config = _CONFIG.value
    trainer = config.get('trainer', 'detector')
    try:
        if trainer not in TRAINERS:
            raise ValueError(f'config.trainer={trainer!r}: not one of {", ".join(TRAINERS)}')
        module = importlib.import_module(f'safefakes_jax.train.{trainer}_trainer')
        results = module.train_and_evaluate(config, _WORKDIR.value)
    except (FileNotFoundError, ValueError, detector_trainer.AnonymizerUnavailableError) as e:
        # Set-up errors (ValueError covers checkpoints.WorkdirConfigError): one line, status 2.
        print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
        sys.exit(2)
    if jax.process_index() > 0:
        return
    if 'stopped_at' in results:
        print(f'stopped at step {results["stopped_at"]} (checkpoint saved; rerun to resume)')
    elif trainer != 'detector':
        scores = ', '.join(
            f'{k} {v:.4f}' for k, v in results.items() if k.endswith(('_l1', '_l1_box'))
        )
        print(
            f'{scores} after {results["steps"]} steps; '
            f'wrote {os.path.join(_WORKDIR.value, "results.json")}'
        )
    else:
        print(
            f'AP easy {results["easy"]:.4f} medium {results["medium"]:.4f} '
            f'hard {results["hard"]:.4f} after {results["steps"]} steps; '
            f'wrote {os.path.join(_WORKDIR.value, "results.json")}'
        )


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
