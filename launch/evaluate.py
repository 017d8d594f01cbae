r"""Evaluates a DSFD checkpoint on a config's unaltered WIDER FACE val split (easy/medium/hard AP).

The params come from the newest checkpoint of a training run (`--workdir`, what
`launch/train.py` wrote; pass the run's config and overrides, which `<workdir>/config.json`
records) or from a converted PyTorch checkpoint (`--params`, what
`tools/convert_torch_weights.py --format=dsfd_vgg` wrote). Writes `<out>/predictions/` (the
official format) and `<out>/results.json`; `--out` defaults to `<workdir>/eval_<procedure>`
(`eval_<procedure>_first<N>` with `--max_images=N`). One process.

`--workdir` must be an existing run folder; nothing is created in it except the output folder.
Its `config.json` is compared with `--config`: a different `model.width` or
`model.anchor_aspect_ratio` (the network, and the anchors its outputs are decoded with) is
refused; any other difference (except the evaluation's own `evals.*` settings) is a one-line
warning and is listed in results.json (`config_differs_from_run`). Set-up errors print one
line `error: ...` and exit with status 2.

  python launch/evaluate.py --config=configs/dsfd_original.py:smoke --workdir=/tmp/dsfd_smoke
  python launch/evaluate.py --config=configs/dsfd_original.py --params=ckpt/dsfd \
      --procedure=multiscale --out=workdirs/dsfd_yx_eval
"""

import dataclasses
import json
import os
import sys
from typing import NoReturn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (path[:arg]).', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'A launch/train.py run folder (its newest checkpoint is evaluated).'
)
_PARAMS = flags.DEFINE_string(
    'params', None, 'A tools/convert_torch_weights.py output folder (instead of --workdir).'
)
_PROCEDURE = flags.DEFINE_enum(
    'procedure',
    None,
    ['single', 'multiscale'],
    'Test-time procedure (default: config.evals.final.procedure).',
)
_OUT = flags.DEFINE_string('out', None, 'Output folder (default <workdir>/eval_<procedure>).')
_MAX_IMAGES = flags.DEFINE_integer(
    'max_images',
    0,
    'Multi-scale: only the first N val images, '
    'scored against their own faces (a quick look, not the '
    "split's AP).",
)


def load_params(config, model, mesh, workdir: str | None, params_dir: str | None):
    """(params on `mesh`, description) from a run's newest or a converted checkpoint.

    Raises:
      FileNotFoundError: no checkpoint there.
      ValueError: a converted checkpoint that is not a full DSFD or does not fit the config.
    """
    import jax

    from safefakes_jax.models import torch_import
    from safefakes_jax.train import checkpoints, detector_trainer
    from safefakes_jax.train import state as state_lib

    specs, _ = detector_trainer.specs(config, model)
    abstract = state_lib.abstract(specs, mesh)
    if params_dir:
        fmt = torch_import.load_conversion_info(params_dir).get('format')
        if fmt != 'dsfd_vgg':
            raise ValueError(
                f'{params_dir}: a {fmt!r} conversion holds no detector heads; '
                'evaluate a dsfd_vgg conversion or a trained --workdir'
            )
        params = detector_trainer.load_init_params(
            params_dir, abstract.nets[detector_trainer.NETWORK].params, mesh
        )
        return params, f'converted {params_dir}'
    if not checkpoints.saved_steps(workdir):  # Checked first: the manager must create nothing.
        raise FileNotFoundError(
            f'{os.path.join(workdir, "checkpoints")}: no checkpoint '
            '(train first with launch/train.py, same --workdir)'
        )
    ckpt = checkpoints.Checkpointer(workdir, every_steps=0, handle_sigterm=False, create=False)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(
                f'{os.path.join(workdir, "checkpoints")}: no checkpoint '
                '(train first with launch/train.py, same --workdir)'
            )
        restored = ckpt.restore(
            abstract,
            hint=f'pass the config and overrides of the run, see {workdir}/config.json',
        )
    finally:
        ckpt.close()
    state, _ = restored
    return (
        state.nets[detector_trainer.NETWORK].params,
        f'{workdir} step {int(jax.device_get(state.step))}',
    )


def _fail(message: str) -> NoReturn:
    """Set-up error: one line on stderr, exit status 2."""
    print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def check_workdir(workdir: str, config) -> list[str]:
    """Checks `--workdir` before anything runs; returns the keys that differ from its config.

    Exits (status 2) when `workdir` does not exist or is no folder, or its `config.json`
    differs in a key of `checkpoints.EVAL_REFUSE_KEYS`; warns (one line) about other
    differences.
    """
    from safefakes_jax.train import checkpoints

    if not os.path.isdir(workdir):
        _fail(
            f'--workdir {workdir} does not exist or is not a folder (a launch/train.py run '
            'folder; nothing was created)'
        )
    try:
        refused, other = checkpoints.compare_for_evaluation(workdir, config)
    except checkpoints.WorkdirConfigError as e:
        _fail(str(e))
    config_json = os.path.join(workdir, checkpoints.CONFIG_FILE)
    if refused:
        _fail(
            f'--config does not match the run in {config_json}: '
            f"{checkpoints.format_differences(refused)} (run -> --config); pass the run's "
            'values (its config and overrides)'
        )
    if other:
        print(
            f'warning: --config differs from {config_json} in {len(other)} key(s) (run -> '
            f'--config): {checkpoints.format_differences(other)}',
            file=sys.stderr,
        )
    elif not os.path.isfile(config_json):
        print(
            f'warning: {config_json} not found; cannot check --config against the run',
            file=sys.stderr,
        )
    return list(other)


def main(argv):
    del argv
    config = _CONFIG.value
    if bool(_WORKDIR.value) == bool(_PARAMS.value):
        _fail('give exactly one of --workdir and --params')
    differs = check_workdir(_WORKDIR.value, config) if _WORKDIR.value else []

    import jax

    jax.config.update('jax_threefry_partitionable', True)
    from safefakes_jax import sharding
    from safefakes_jax.evaluation import detector_eval, evaluators
    from safefakes_jax.evaluation.evaluators import wider_ap
    from safefakes_jax.train import detector_trainer

    procedure = _PROCEDURE.value or config.evals.final.procedure
    if procedure not in detector_eval.PROCEDURES:
        _fail(f'config.evals.final.procedure={procedure!r}: not one of {detector_eval.PROCEDURES}')
    if _MAX_IMAGES.value and procedure != 'multiscale':
        _fail('--max_images applies to --procedure=multiscale only')
    suffix = f'_first{_MAX_IMAGES.value}' if _MAX_IMAGES.value else ''
    out = _OUT.value or (
        os.path.join(_WORKDIR.value, f'eval_{procedure}{suffix}') if _WORKDIR.value else None
    )
    if out is None:
        _fail('--out is required with --params')
    mesh = sharding.make_mesh(config.mesh.num_devices or None)
    model = detector_trainer.build_model(config)
    section = dict(
        config.evals.final.to_dict(), procedure=procedure, write_predictions=False, grid_images=0
    )
    try:
        params, source = load_params(config, model, mesh, _WORKDIR.value, _PARAMS.value)
        evaluator = wider_ap.Evaluator(
            'final', section, evaluators.Context(config, {detector_trainer.NETWORK: model}, mesh)
        )
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    preds = evaluator.predict(params, max_images=_MAX_IMAGES.value)
    if _MAX_IMAGES.value:
        # A quick look: score the images it saw, not the whole split (their misses would count).
        gt = evaluator.ground_truth
        evaluator.ground_truth = dataclasses.replace(
            gt, images=[im for im in gt.images if (im.event, im.stem) in preds]
        )
    results = evaluator.results_of(preds)
    ap = {k: results[k] for k in ('easy', 'medium', 'hard')}
    results.update(params=source, images=len(preds))
    if differs:
        results['config_differs_from_run'] = differs
    detector_eval.write_results(out, preds, results)
    print(json.dumps(results))
    print(
        f'AP easy {ap["easy"]:.4f} medium {ap["medium"]:.4f} hard {ap["hard"]:.4f} '
        f'({procedure}); wrote {os.path.join(out, "results.json")}'
    )


if __name__ == '__main__':
    flags.mark_flag_as_required('config')
    app.run(main)
