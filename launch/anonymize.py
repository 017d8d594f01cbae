r"""Anonymizes a WIDER-layout folder into a WIDER-layout copy (images, annotations, manifest).

  python launch/anonymize.py --config=configs/anonymize/blur.py:smoke
  python launch/anonymize.py --config=configs/anonymize/pixelate.py \
      --config.src=data/widerface --config.dst=data/widerface_pixelate --config.workers=8

Rerunning the same command after a crash or Ctrl-C resumes (finished images are verified
against the manifest and skipped). Exit status 1 when some images could not be anonymized
(listed at the end; they are not in the copy), 2 on a usage or settings error.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:arg]).', lock_config=True
)
_QUIET = flags.DEFINE_bool('quiet', False, 'No progress bar.')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    from safefakes_jax.anonymizers import engine
    from safefakes_jax.data import manifest

    logging.set_verbosity(logging.WARNING)  # No library INFO lines (orbax restoring weights).
    config = _CONFIG.value
    try:
        summary = engine.run(config, progress=not _QUIET.value)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            '\ninterrupted; finished images are kept: rerun the same command to resume',
            file=sys.stderr,
        )
        return 130
    print(summary.format())
    print(f'manifest: {os.path.join(summary.dst, manifest.MANIFEST)}')
    return 1 if summary.failed else 0


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
