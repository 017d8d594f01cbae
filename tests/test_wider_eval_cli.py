"""Tests for tools/wider_eval.py and the PR-curve figure."""

import json
import os
import sys

import cv2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tools'))

import wider_eval  # noqa: E402

from safefakes_jax.data import wider  # noqa: E402
from tests.test_wider_ap import random_case, write_gt  # noqa: E402


def test_cli_json_plot_and_several_predictions(tmp_path, capsys):
    gt, preds = random_case(2)
    write_gt(tmp_path / 'gt', gt)
    wider.write_predictions(tmp_path / 'a', preds)
    worse = {k: v * [1, 1, 1, 1, -1] for k, v in preds.items()}  # Scores reversed.
    wider.write_predictions(tmp_path / 'b', worse)
    out_json, out_png = tmp_path / 'ap.json', tmp_path / 'pr.png'
    assert wider_eval.main(['--pred', str(tmp_path / 'a'), '--gt', str(tmp_path / 'gt'),
                            '--json', str(out_json)]) == 0
    one = json.loads(out_json.read_text())
    assert set(one) == {'easy', 'medium', 'hard'}
    assert 'easy' in capsys.readouterr().out
    assert wider_eval.main(['--pred', str(tmp_path / 'a'), '--label', 'good',
                            '--pred', str(tmp_path / 'b'), '--label', 'reversed',
                            '--gt', str(tmp_path / 'gt'), '--json', str(out_json),
                            '--plot', str(out_png)]) == 0
    both = json.loads(out_json.read_text())
    assert both['good'] == one
    assert both['reversed']['hard'] < both['good']['hard']
    image = cv2.imread(str(out_png))
    assert image is not None and image.shape[1] > image.shape[0] > 300


def test_cli_bad_input_exit_status(tmp_path, capsys):
    gt, preds = random_case(1)
    write_gt(tmp_path / 'gt', gt)
    key = next(iter(preds))
    bad = tmp_path / 'p' / key[0] / f'{key[1]}.txt'
    bad.parent.mkdir(parents=True)
    bad.write_text('x\n1\n1 2 3 oops 0.5\n')
    assert wider_eval.main(['--pred', str(tmp_path / 'p'), '--gt', str(tmp_path / 'gt')]) == 2
    assert f'{bad}:3: non-numeric' in capsys.readouterr().err
    assert wider_eval.main(['--pred', str(tmp_path / 'p'), '--gt', str(tmp_path)]) == 2
    assert 'wider_face_val.mat' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'ap.json')
