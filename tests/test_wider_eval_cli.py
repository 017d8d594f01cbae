"""Tests for tools/wider_eval.py and the PR-curve figure."""

import json
import os
import sys

import cv2
import numpy as np
import pytest

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
    assert (
        wider_eval.main(
            ['--pred', str(tmp_path / 'a'), '--gt', str(tmp_path / 'gt'), '--json', str(out_json)]
        )
        == 0
    )
    one = json.loads(out_json.read_text())
    assert set(one) == {'easy', 'medium', 'hard'}
    assert 'easy' in capsys.readouterr().out
    assert (
        wider_eval.main(
            [
                '--pred',
                str(tmp_path / 'a'),
                '--label',
                'good',
                '--pred',
                str(tmp_path / 'b'),
                '--label',
                'reversed',
                '--gt',
                str(tmp_path / 'gt'),
                '--json',
                str(out_json),
                '--plot',
                str(out_png),
            ]
        )
        == 0
    )
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


def _one_image_gt(tmp_path):
    gt, _ = random_case(1, n_images=2)
    write_gt(tmp_path / 'gt', gt)
    return gt


def test_cli_no_matching_prediction_file_exits_2_naming_the_layout(tmp_path, capsys):
    gt = _one_image_gt(tmp_path)
    im = gt.images[0]
    jpg_txt = tmp_path / 'jpg_txt' / im.event / f'{im.stem}.jpg.txt'
    jpg_txt.parent.mkdir(parents=True)
    jpg_txt.write_text(f'{im.stem}\n1\n0 0 20 20 0.9\n')
    flat = tmp_path / 'flat' / f'{im.stem}.txt'
    flat.parent.mkdir()
    flat.write_text(f'{im.stem}\n1\n0 0 20 20 0.9\n')
    for pred, found in (
        (jpg_txt.parents[1], f'{im.event}/{im.stem}.jpg.txt'),
        (flat.parent, f'found {im.stem}.txt'),
    ):
        assert (
            wider_eval.main(
                [
                    '--pred',
                    str(pred),
                    '--gt',
                    str(tmp_path / 'gt'),
                    '--json',
                    str(tmp_path / 'ap.json'),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith('error: ') and err.count('\n') == 1, err
        assert '<pred>/<event>/<image stem>.txt' in err and found in err
    assert not os.path.exists(tmp_path / 'ap.json')


def test_cli_partial_match_is_a_warning_with_the_count(tmp_path, capsys):
    gt = _one_image_gt(tmp_path)
    im = gt.images[0]
    wider.write_predictions(tmp_path / 'p', {(im.event, im.stem): np.zeros((0, 5))})
    assert wider_eval.main(['--pred', str(tmp_path / 'p'), '--gt', str(tmp_path / 'gt')]) == 0
    out, err = capsys.readouterr()
    assert 'warning: p: ' in err and 'matched 1 of 2 ground-truth images' in err
    assert 'easy' in out


@pytest.mark.parametrize(
    'content, where',
    [
        (b'\xef\xbb\xbfx\n1\n0 0 20 20 0.5\n', ':1: file starts with a byte-order mark'),
        (b'x\n1\n0 0 20 20 0.5\n\xff\n', ':4: not valid UTF-8'),
    ],
)
def test_cli_bom_or_non_utf8_file_exits_2_with_file_and_line(tmp_path, capsys, content, where):
    gt = _one_image_gt(tmp_path)
    im = gt.images[0]
    bad = tmp_path / 'p' / im.event / f'{im.stem}.txt'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    assert wider_eval.main(['--pred', str(tmp_path / 'p'), '--gt', str(tmp_path / 'gt')]) == 2
    err = capsys.readouterr().err
    assert f'error: {bad}{where}' in err and err.count('\n') == 1, err


def test_cli_symlink_out_of_the_prediction_folder_exits_2(tmp_path, capsys):
    gt = _one_image_gt(tmp_path)
    im = gt.images[0]
    outside = tmp_path / 'outside' / im.event
    outside.mkdir(parents=True)
    (outside / f'{im.stem}.txt').write_text(f'{im.stem}\n0\n')
    (tmp_path / 'event_link').mkdir()
    (tmp_path / 'event_link' / im.event).symlink_to(outside)
    (tmp_path / 'file_link' / im.event).mkdir(parents=True)
    (tmp_path / 'file_link' / im.event / f'{im.stem}.txt').symlink_to(outside / f'{im.stem}.txt')
    for pred in ('event_link', 'file_link'):
        assert wider_eval.main(['--pred', str(tmp_path / pred), '--gt', str(tmp_path / 'gt')]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'outside' in err and 'symlink' in err, err


def test_cli_detection_rate_is_the_share_of_faces_found(tmp_path, capsys):
    gt, preds = random_case(3)
    write_gt(tmp_path / 'gt', gt)
    wider.write_predictions(tmp_path / 'none', {k: v[:0] for k, v in preds.items()})
    perfect = {}  # One exact detection per ground-truth face.
    for im in gt.images:
        boxes = np.asarray(im.boxes, np.float64).reshape(-1, 4)
        perfect[(im.event, im.stem)] = np.hstack([boxes, np.ones((len(boxes), 1))])
    wider.write_predictions(tmp_path / 'all', perfect)
    args = ['--gt', str(tmp_path / 'gt'), '--recall']
    assert wider_eval.main(['--pred', str(tmp_path / 'all'), *args]) == 0
    assert 'detection rate at IoU 0.5: easy 1.0000  medium 1.0000  hard 1.0000' in (
        capsys.readouterr().out
    )
    wider_eval.main(['--pred', str(tmp_path / 'none'), *args])
    assert 'hard 0.0000' in capsys.readouterr().out.splitlines()[-1]
