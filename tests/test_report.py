"""The run registry and the report (`evaluation/run_registry.py`, `evaluation/report.py`,
`launch/report.py`): entries from results, metrics attached by training set, Table II's Pearson
r against scipy with n per column, every figure written, malformed input refused."""

import json
import os
import sys

import numpy as np
import pytest
import scipy.stats

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'launch'))

import report as report_cli  # noqa: E402

from safefakes_jax.evaluation import report, run_registry  # noqa: E402

# (anonymizer, easy, medium, hard, l1, ssim, rank-1 re-id, generator faces, generator steps)
RUNS = [
    ('original', 0.87, 0.78, 0.42, None, None, None, None, None),
    ('blur', 0.01, 0.02, 0.02, 0.034, 0.84, 0.036, None, None),
    ('blackout', 0.00, 0.00, 0.00, 0.144, 0.60, 0.0005, None, None),
    ('pixelate', 0.05, 0.06, 0.04, 0.080, 0.70, 0.02, None, None),
    ('deepprivacy', 0.30, 0.33, 0.20, 0.061, 0.75, 0.0005, 5000, 1200),
    ('deepprivacy', 0.40, 0.42, 0.25, 0.055, 0.78, 0.0004, 20000, 4800),
]


def _make(tmp_path):
    runs, metrics = tmp_path / 'runs', tmp_path / 'metrics'
    metrics.mkdir()
    for i, (name, e, m, h, l1, ssim, rank1, faces, steps) in enumerate(RUNS):
        train = str(tmp_path / f'wider_{name}_{i}')
        settings = {'anonymizer': {'name': name}}
        if faces:
            settings['anonymizer']['generator'] = {'train_faces': faces, 'step': steps}
        results = {
            'easy': e,
            'medium': m,
            'hard': h,
            'steps': 500,
            'training_dataset': train,
            'anonymizer': name,
            'anonymization': None if name == 'original' else {'settings': settings},
            'evaluations': [
                {'step': 250, 'name': 'val', 'easy': e / 2, 'medium': m / 2, 'hard': h}
            ],
        }
        workdir = runs / f'run{i}'
        workdir.mkdir(parents=True)
        run_registry.write(str(workdir), results)
        if l1 is not None:
            identity = {'rank1': rank1, 'faces': 100}
            out = {'anon': train, 'metrics': {'l1': l1, 'ssim': ssim, 'identity': identity}}
            (metrics / f'{i}.json').write_text(json.dumps(out))
    return str(runs), str(metrics)


def test_table_ii_and_every_figure(tmp_path, capsys):
    runs, metrics = _make(tmp_path)
    entries = run_registry.read_all(runs, [metrics])
    assert [e['family'] for e in entries].count('gan') == 2
    rows = {r['metric']: r for r in report.table_ii(entries)}
    anonymized = [r for r in RUNS if r[0] != 'original']
    mean_ap = [np.mean(r[1:4]) for r in anonymized]
    want = scipy.stats.pearsonr([r[4] for r in anonymized], mean_ap).statistic
    assert rows['l1']['All'] == pytest.approx(want) and rows['l1']['All_n'] == 5
    assert rows['l1']['Conventional_n'] == 3 and rows['l1']['GAN_n'] == 2
    assert rows['fid']['All'] is None and rows['fid']['All_n'] == 0  # Not computed: no value.
    out = tmp_path / 'report'
    assert report_cli.main(['--runs', runs, '--metrics', metrics, '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'n=2, n < 3!' in printed  # Two GAN runs: flagged.
    for name in (
        'table_ii.md',
        'table_ii.csv',
        'fig4_ap_by_anonymizer.png',
        'fig6_ap_vs_detector_steps.png',
        'fig7_ap_vs_gan_training_faces.png',
        'fig9_ap_vs_gan_training_steps.png',
        'privacy_utility.png',
    ):
        assert (out / name).stat().st_size > 100, name
    assert 'l1,' in (out / 'table_ii.csv').read_text()


def test_malformed_entries_are_refused(tmp_path, capsys):
    runs = tmp_path / 'runs'
    runs.mkdir()
    (runs / 'bad.json').write_text(json.dumps({'anonymizer': 'blur', 'ap': {'easy': 'x'}}))
    assert report_cli.main(['--runs', str(runs), '--out', str(tmp_path / 'o')]) == 2
    assert 'bad.json: "ap" needs finite' in capsys.readouterr().err
    (runs / 'bad.json').write_text('{')
    assert report_cli.main(['--runs', str(runs), '--out', str(tmp_path / 'o')]) == 2
    assert 'unreadable JSON' in capsys.readouterr().err
    assert report_cli.main(['--runs', str(tmp_path / 'none'), '--out', str(tmp_path / 'o')]) == 2


def test_runs_named_one_by_one_or_as_a_folder(tmp_path):
    # `--runs` repeated: run folders (as `make demo` passes its two) give the same entries as
    # their parent folder; an entry file counts too.
    runs, metrics = _make(tmp_path)
    whole = run_registry.read_all(runs, [metrics])
    folders = sorted(str(p) for p in (tmp_path / 'runs').iterdir() if p.is_dir())
    one_by_one = run_registry.read_all(folders[:-1] + [f'{folders[-1]}/registry_entry.json'])
    assert [e['run'] for e in one_by_one] == [e['run'] for e in whole]
    assert (
        report_cli.main(['--runs', folders[0], '--runs', folders[1], '--out', str(tmp_path / 'o')])
        == 0
    )
    with pytest.raises(FileNotFoundError, match='none'):
        run_registry.read_all([folders[0], str(tmp_path / 'none')])
