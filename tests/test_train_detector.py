"""DSFD trainer end to end on a tiny synthetic WIDER FACE (8 fake CPU devices).

One module-scoped synthetic set (and its conventional anonymized copies, made with the
engine) is shared by all tests; a persistent compilation cache under the session's temp folder
lets the runs share their compiled steps (identical programs).
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from configs import dsfd_base
from safefakes_jax.anonymizers import engine
from safefakes_jax.data import synthetic
from safefakes_jax.train import checkpoints, detector_trainer
from tests.folders import read_tree

# Identical programs compile once across the module's tests (see conftest).
# One worker for the module (`make test` runs `--dist loadgroup`): its module fixtures, a
# synthetic set with its anonymized copies and a trained run, are then built once.
pytestmark = [pytest.mark.usefixtures('jax_compile_cache'), pytest.mark.xdist_group('detector')]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVENTIONAL = dsfd_base.CONVENTIONAL


@pytest.fixture(scope='module', autouse=True)
def tfds_cache(tmp_path_factory):
    """The TFDS records of this module's folders (and its subprocesses') in a temp folder,
    never in the user's cache (`tfds_wider.default_data_dir`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('SAFEFAKES_TFDS_DIR', str(tmp_path_factory.mktemp('tfds_cache')))
        yield


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('train')
    src = str(base / 'synthetic_wider')
    synthetic.generate(src, 8, 3, seed=0, workers=1, progress=False, width=128)
    for method in CONVENTIONAL:
        mod = __import__(f'configs.anonymize.{method}', fromlist=['get_config'])
        cfg = mod.get_config('smoke')
        cfg.src = src
        cfg.dst = f'{src}_{method}'
        cfg.workers = 1
        engine.run(cfg, progress=False)
    return src


def _config(dataset: str, src: str):
    mod = __import__(f'configs.dsfd_{dataset}', fromlist=['get_config'])
    config = mod.get_config('tiny')
    config.data.original_train_root = src
    config.data.train_root = src if dataset == 'original' else f'{src}_{dataset}'
    config.data.val_root = src
    return config


def test_smoke_configs_are_small_and_paper_configs_match_the_paper():
    for name in ('original',) + CONVENTIONAL + dsfd_base.GANS:
        mod = __import__(f'configs.dsfd_{name}', fromlist=['get_config'])
        full, smoke = mod.get_config(), mod.get_config('smoke')
        assert (full.data.batch_size, full.optim.detector.lr, full.train.steps) == (
            4,
            2.5e-4,
            60_000,
        )
        assert full.model.width == 1.0 and smoke.model.width <= 0.25
        assert smoke.data.image_size <= 320 and 'synthetic' in smoke.data.train_root
        assert full.dataset == name
    assert mod.get_config('steps=7500').train.steps == 7_500
    paper = mod.get_config('paper')
    assert (paper.model.anchor_aspect_ratio, paper.model.match_threshold) == (1.5, 0.4)


@pytest.fixture(scope='module')
def original_run(roots, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('original_run')
    return workdir, detector_trainer.train_and_evaluate(_config('original', roots), str(workdir))


@pytest.mark.parametrize('dataset', ('original',) + CONVENTIONAL)
def test_two_step_smoke_run(roots, original_run, tmp_path, dataset):
    if dataset == 'original':
        tmp_path, results = original_run
    else:
        results = detector_trainer.train_and_evaluate(_config(dataset, roots), str(tmp_path))
    assert results['steps'] == 2 and results['anonymizer'] == dataset
    assert len(results['history']) == 2
    assert all(np.isfinite(m['loss']) for m in results['history'])
    saved = json.load(open(tmp_path / 'results.json'))
    assert set(saved) >= {'easy', 'medium', 'hard', 'steps', 'training_dataset', 'anonymizer'}
    assert all(0.0 <= saved[k] <= 1.0 for k in ('easy', 'medium', 'hard'))
    assert saved['training_dataset'].endswith(
        'synthetic_wider' if dataset == 'original' else f'synthetic_wider_{dataset}'
    )
    # The run's registry entry (what launch/report.py reads).
    entry = json.load(open(tmp_path / 'registry_entry.json'))
    assert entry['anonymizer'] == dataset and entry['detector_steps'] == 2
    assert entry['family'] == ('original' if dataset == 'original' else 'conventional')
    assert entry['ap']['easy'] == saved['easy']
    assert entry['ap']['mean'] == pytest.approx(
        (saved['easy'] + saved['medium'] + saved['hard']) / 3
    )
    # Provenance: the anonymized set's config hash and method parameters reach results.json.
    if dataset == 'original':
        assert saved['anonymization'] is None
    else:
        made = json.load(open(os.path.join(saved['training_dataset'], 'anonymization_config.json')))
        assert saved['anonymization'] == {
            'config_hash': made['config_hash'],
            'settings': made['settings'],
        }
        assert saved['anonymization']['settings']['anonymizer']['name'] == dataset
    assert (tmp_path / 'config.json').exists() and (tmp_path / 'predictions').is_dir()
    assert any(f.startswith('events.out') for f in os.listdir(tmp_path))
    grid = cv2.imread(str(tmp_path / 'final_detections.png'))
    assert grid is not None and grid.shape[0] > 64 and grid.shape[1] > 2 * 64  # 3 val images.


def test_training_set_without_or_with_other_provenance_is_refused(roots, tmp_path):
    blur = f'{roots}_blur'
    config = _config('blackout', roots)
    config.data.train_root = blur  # A 25x25 blur set labelled as black-out.
    with pytest.raises(
        ValueError, match="anonymized with 'blur', but config.dataset is 'blackout'"
    ):
        detector_trainer.train_and_evaluate(config, str(tmp_path / 'a'))
    bare = tmp_path / 'bare'
    shutil.copytree(blur, bare)
    os.remove(bare / 'anonymization_config.json')
    config = _config('blur', roots)
    config.data.train_root = str(bare)
    with pytest.raises(ValueError, match='no anonymization_config.json'):
        detector_trainer.train_and_evaluate(config, str(tmp_path / 'b'))
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(roots, original_run, tmp_path):
    # Same program as the 2-step smoke runs (cached compile): stop after 1 of 2, resume.
    full = original_run[1]
    cut = str(tmp_path / 'b')
    first = detector_trainer.train_and_evaluate(_config('original', roots), cut, stop_after=1)
    assert first['stopped_at'] == 1
    assert os.listdir(os.path.join(cut, 'checkpoints')) == ['1']
    second = detector_trainer.train_and_evaluate(_config('original', roots), cut)
    assert second['steps'] == 2 and len(second['history']) == 1
    resumed = first['history'] + second['history']
    assert full['history'][0]['loss'] != full['history'][1]['loss']
    for a, b in zip(full['history'], resumed, strict=True):
        for k in ('loss', 'loc1', 'conf1', 'loc2', 'conf2', 'lr', 'grad_norm'):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=k)
    for k in ('easy', 'medium', 'hard'):
        assert full[k] == pytest.approx(second[k], abs=1e-6)


@pytest.mark.parametrize('dataset', dsfd_base.GANS)
def test_gan_configs_stop_before_compiling(tmp_path, dataset):
    mod = __import__(f'configs.dsfd_{dataset}', fromlist=['get_config'])
    config = mod.get_config('smoke')
    config.data.train_root = str(tmp_path / f'nowhere_{dataset}')
    # Every GAN exists: a missing set names its anonymize command.
    with pytest.raises(FileNotFoundError, match=f'configs/anonymize/{dataset}.py'):
        detector_trainer.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / 'checkpoints')
    config.dataset = 'not_a_method'
    with pytest.raises(detector_trainer.AnonymizerUnavailableError, match='does not exist yet'):
        detector_trainer.train_and_evaluate(config, str(tmp_path))


def test_missing_anonymized_folder_names_it_and_the_command(roots, tmp_path):
    config = _config('blur', roots)
    config.data.train_root = str(tmp_path / 'nowhere_blur')
    with pytest.raises(FileNotFoundError) as err:
        detector_trainer.train_and_evaluate(config, str(tmp_path / 'run'))
    msg = str(err.value)
    assert 'nowhere_blur' in msg
    assert (
        f'python launch/anonymize.py --config=configs/anonymize/blur.py:smoke '
        f'--config.src={roots} --config.dst={config.data.train_root}'
    ) in msg


def test_missing_val_folder_is_named(roots, tmp_path):
    config = _config('original', roots)
    config.data.val_root = str(tmp_path / 'no_val')
    with pytest.raises(FileNotFoundError, match='no_val'):
        detector_trainer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_non_finite_loss_names_the_step_and_images():
    from safefakes_jax.train import loop

    window = [
        (7, {'loss': np.float32(1.0)}, np.array([b'a/x.jpg'])),
        (8, {'loss': np.float32(np.nan)}, np.array([b'0--Parade/p_1.jpg', b'b/y.jpg'])),
    ]
    with pytest.raises(
        FloatingPointError,
        match=r'loss \(nan\) at step 8.*0--Parade/p_1.jpg, '
        r'b/y.jpg',
    ):
        loop._fetch_window(window, ('loss',))


def test_launch_script_reports_the_missing_anonymizer(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            'launch/train.py',
            '--config=configs/dsfd_ciagan.py:smoke',
            '--config.dataset=not_a_method',
            f'--workdir={tmp_path}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    assert proc.returncode == 2
    assert 'not_a_method anonymizer does not exist yet' in proc.stderr


def test_init_from_converted_checkpoint_replaces_the_params_it_holds(tmp_path):
    import jax

    from safefakes_jax import sharding
    from safefakes_jax.models import dsfd, torch_import

    # Random numbers in the network's shapes: compiling DSFD's init takes a minute on CPU.
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
    rng = np.random.default_rng(0)

    def random_params(width):
        shapes = jax.eval_shape(dsfd.DSFD(width=width).init, jax.random.key(0), images)
        return jax.tree.map(lambda s: rng.standard_normal(s.shape, s.dtype), shapes['params'])

    fresh, other = random_params(0.0625), random_params(0.0625)
    mesh = sharding.make_mesh(1)
    torch_import.save_converted(tmp_path / 'full', other, {'format': 'dsfd_vgg'})
    torch_import.save_converted(
        tmp_path / 'vgg', {'vgg': other['vgg']}, {'format': 'vgg16_reducedfc'}
    )

    full = detector_trainer.load_init_params(str(tmp_path / 'full'), fresh, mesh)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(other), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    backbone = detector_trainer.load_init_params(str(tmp_path / 'vgg'), fresh, mesh)
    np.testing.assert_array_equal(
        np.asarray(backbone['vgg']['conv1_1']['kernel']), other['vgg']['conv1_1']['kernel']
    )
    np.testing.assert_array_equal(
        np.asarray(backbone['loc_pal2_0']['kernel']), np.asarray(fresh['loc_pal2_0']['kernel'])
    )

    wide = random_params(0.125)
    with pytest.raises(ValueError, match='init_from=.*full'):
        detector_trainer.load_init_params(str(tmp_path / 'full'), wide, mesh)
    with pytest.raises(FileNotFoundError, match='convert_torch_weights'):
        detector_trainer.load_init_params(str(tmp_path / 'missing'), fresh, mesh)


def test_evaluate_script_reproduces_the_runs_final_evaluation(roots, original_run, tmp_path):
    workdir, results = original_run
    out = tmp_path / 'eval'
    proc = subprocess.run(
        [
            sys.executable,
            'launch/evaluate.py',
            '--config=configs/dsfd_original.py:smoke',
            f'--workdir={workdir}',
            '--procedure=single',
            f'--out={out}',
            f'--config.data.val_root={roots}',
            '--config.model.width=0.0625',
            '--config.data.image_size=64',
            '--config.evals.final.image_size=64',
            '--config.data.max_boxes=16',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.load(open(out / 'results.json'))
    assert saved['params'].endswith('step 2') and saved['test_procedure'] == 'single'
    # The run's training-only overrides were not passed: a warning (and a record), no refusal.
    assert f'warning: --config differs from {workdir / "config.json"}' in proc.stderr
    assert 'data.shuffle_buffer' in saved['config_differs_from_run']
    for k in ('easy', 'medium', 'hard'):
        assert saved[k] == pytest.approx(results[k], abs=1e-9)
    ours = sorted(p.relative_to(out / 'predictions') for p in (out / 'predictions').rglob('*.txt'))
    theirs = sorted(
        p.relative_to(workdir / 'predictions') for p in (workdir / 'predictions').rglob('*.txt')
    )
    assert ours == theirs and len(ours) == 3
    for rel in ours:
        assert (out / 'predictions' / rel).read_text() == (
            workdir / 'predictions' / rel
        ).read_text()


def test_evaluate_script_rejects_a_missing_checkpoint(roots, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            'launch/evaluate.py',
            '--config=configs/dsfd_original.py:smoke',
            f'--workdir={tmp_path}',
            f'--config.data.val_root={roots}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    assert proc.returncode == 2 and 'no checkpoint' in proc.stderr
    assert os.listdir(tmp_path) == []  # Orbax's manager did not create checkpoints/.


def _copy_run(original_run, tmp_path) -> str:
    workdir = str(tmp_path / 'run')
    shutil.copytree(original_run[0], workdir)
    return workdir


def test_workdir_of_another_config_is_refused_before_anything_is_written(
    roots, original_run, tmp_path
):
    workdir = _copy_run(original_run, tmp_path)
    before = read_tree(workdir)
    config = _config('original', roots)
    config.optim.detector.lr = 2e-3
    config.seed = 7
    with pytest.raises(checkpoints.WorkdirConfigError) as err:
        detector_trainer.train_and_evaluate(config, workdir)
    msg = str(err.value)
    assert 'another config (checkpoint at step 2)' in msg and 'differs in 2 key(s)' in msg
    assert 'seed: 0 -> 7' in msg and 'optim.detector.lr: 0.001 -> 0.002' in msg
    assert 'resume_with_changed_config=true' in msg and '\n' not in msg
    assert read_tree(workdir) == before  # config.json and results.json untouched.
    # Checkpoints without a config.json cannot be checked: refused as well.
    os.remove(os.path.join(workdir, 'config.json'))
    before = read_tree(workdir)
    with pytest.raises(
        checkpoints.WorkdirConfigError,
        match=r'checkpoints \(newest step 2\) and results.json but no config.json',
    ):
        detector_trainer.train_and_evaluate(_config('original', roots), workdir)
    assert read_tree(workdir) == before


def test_check_workdir_same_config_safe_keys_and_the_switch(roots, original_run, tmp_path):
    workdir = str(original_run[0])  # Only read.
    config = _config('original', roots)
    assert checkpoints.check_workdir(workdir, config) is None
    assert checkpoints.check_workdir(str(tmp_path / 'new'), config) is None
    config.resume_with_changed_config = True  # Never counts as a change itself.
    assert checkpoints.check_workdir(workdir, config) is None
    safe = _config('original', roots)
    safe.train.log_every = 5
    safe.data.tfds_dir = str(tmp_path / 'elsewhere')
    entry = checkpoints.check_workdir(workdir, safe)  # Operational keys: accepted, recorded.
    assert entry['forced'] is False and entry['step'] == 2
    assert entry['changes'] == {
        'data.tfds_dir': {'old': '', 'new': str(tmp_path / 'elsewhere')},
        'train.log_every': {'old': 1, 'new': 5},
    }
    (tmp_path / 'results_only').mkdir()
    (tmp_path / 'results_only' / 'results.json').write_text('{}')
    with pytest.raises(checkpoints.WorkdirConfigError, match='results.json but no config.json'):
        checkpoints.check_workdir(str(tmp_path / 'results_only'), _config('original', roots))


def test_resume_with_changed_config_continues_and_records_the_change(roots, original_run, tmp_path):
    workdir = _copy_run(original_run, tmp_path)
    config = _config('original', roots)
    config.optim.detector.lr = 2e-3
    config.resume_with_changed_config = True
    results = detector_trainer.train_and_evaluate(config, workdir)  # Step 2 of 2: eval only.
    assert results['steps'] == 2 and results['history'] == []
    changes = json.load(open(os.path.join(workdir, 'config_changes.json')))
    assert len(changes) == 1 and changes[0]['step'] == 2 and changes[0]['forced'] is True
    assert changes[0]['changes'] == {'optim.detector.lr': {'old': 1e-3, 'new': 2e-3}}
    saved = json.load(open(os.path.join(workdir, 'results.json')))
    assert saved['config_changes'] == [{'step': 2, 'keys': ['optim.detector.lr']}]
    assert json.load(open(os.path.join(workdir, 'config.json')))['optim']['detector']['lr'] == 2e-3


def test_launch_train_refuses_another_configs_workdir_with_exit_2(roots, tmp_path):
    other = _config('original', roots)
    other.seed = 3
    workdir = tmp_path / 'run'
    workdir.mkdir()
    checkpoints.write_config(workdir, other)
    before = read_tree(workdir)
    proc = subprocess.run(
        [
            sys.executable,
            'launch/train.py',
            '--config=configs/dsfd_original.py:smoke',
            f'--workdir={workdir}',
            f'--config.data.original_train_root={roots}',
            f'--config.data.train_root={roots}',
            f'--config.data.val_root={roots}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'seed: 3 -> 0' in errors[0], proc.stderr[-3000:]
    assert 'train.steps: 2 -> 500' in errors[0]
    assert read_tree(workdir) == before


def test_evaluate_script_refuses_a_missing_workdir_or_another_model(roots, original_run, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    missing = tmp_path / 'nowhere'
    proc = subprocess.run(
        [
            sys.executable,
            'launch/evaluate.py',
            '--config=configs/dsfd_original.py:smoke',
            f'--workdir={missing}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2 and f'--workdir {missing} does not exist' in proc.stderr
    assert not missing.exists()
    workdir = original_run[0]
    before = sorted(os.listdir(workdir))
    proc = subprocess.run(
        [
            sys.executable,
            'launch/evaluate.py',
            '--config=configs/dsfd_original.py:smoke',
            f'--workdir={workdir}',
            f'--config.data.val_root={roots}',
            '--procedure=single',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'model.width: 0.0625 -> 0.125' in errors[0], proc.stderr
    assert sorted(os.listdir(workdir)) == before  # No eval_single/.


def test_unknown_final_procedure_fails_before_compiling(roots, tmp_path):
    config = _config('original', roots)
    config.evals.final.procedure = 'multi_scale'
    with pytest.raises(ValueError, match="final.procedure='multi_scale'"):
        detector_trainer.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / 'checkpoints')


def test_multiscale_evaluation_covers_every_val_image(roots):
    import jax

    from safefakes_jax.data import wider_mat
    from safefakes_jax.evaluation import detector_eval
    from safefakes_jax.models import dsfd

    model = dsfd.DSFD(width=0.0625)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes['params']
    )
    # Capped at 128 px: the 128-px images would be run up to 10x.
    preds = detector_eval.predict_multiscale(model, params, roots, aspect_ratio=1.0, max_side=128)
    gt = wider_mat.read_ground_truth(wider_mat.ground_truth_dir(roots))
    assert set(preds) == {(im.event, im.stem) for im in gt.images}
    assert all(p.shape[1] == 5 and np.isfinite(p).all() for p in preds.values())
    ap = detector_eval.average_precision(preds, gt)
    assert all(0.0 <= ap[k] <= 1.0 for k in ('easy', 'medium', 'hard'))


@pytest.mark.slow
def test_smoke_config_reaches_easy_ap_0_6_on_the_synthetic_set(tmp_path):
    # The README's quality claim, end to end (about 6 minutes on 2 cores; `make test-all`).
    src = str(tmp_path / 'synthetic_wider')
    synthetic.generate(src, 1000, 300, seed=0, workers=2, progress=False)
    from configs import dsfd_original

    config = dsfd_original.get_config('smoke')
    config.data.original_train_root = config.data.train_root = config.data.val_root = src
    config.mesh.num_devices = 1  # As `launch/train.py` runs it (conftest fakes 8 devices).
    results = detector_trainer.train_and_evaluate(config, str(tmp_path / 'run'))
    assert results['steps'] == 500
    assert results['easy'] >= 0.6, results


def test_wider_ap_evaluator_builds_its_val_pipeline_once(roots, monkeypatch):
    import types

    import jax

    from safefakes_jax import sharding
    from safefakes_jax.data import detection_pipeline
    from safefakes_jax.evaluation import evaluators
    from safefakes_jax.models import dsfd

    built = []
    real = detection_pipeline.make_eval_dataset
    monkeypatch.setattr(
        detection_pipeline, 'make_eval_dataset', lambda *a, **k: built.append(a) or real(*a, **k)
    )
    config = _config('original', roots)
    model = dsfd.DSFD(width=0.0625)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes['params']
    )
    state = types.SimpleNamespace(nets={'detector': types.SimpleNamespace(eval_params=params)})
    (ev,) = evaluators.build(
        {'val': config.evals.val},
        evaluators.Context(config, {'detector': model}, sharding.make_mesh(8)),
    ).values()
    first, second = ev.run(state, 1), ev.run(state, 2)
    assert len(built) == 1  # Built with the evaluator, iterated by both evaluations.
    assert first.scalars == second.scalars and set(first.scalars) == {
        'ap_easy',
        'ap_medium',
        'ap_hard',
    }
    assert first.images['detections'].ndim == 3 and first.results['test_procedure'] == 'single'
    with pytest.raises(ValueError, match="unknown evaluator type 'fid2'"):
        evaluators.build({'x': {'type': 'fid2'}}, evaluators.Context(config, {}, None))
