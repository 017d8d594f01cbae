"""`launch/metrics.py` and `evaluation/set_metrics.py` on small synthetic sets: blur and blackout
copies give the metrics' expected order, an unaltered copy is identical, FID without weights is
unavailable (not made up), and mismatched or missing folders are clear errors."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'launch'))

import metrics as metrics_cli  # noqa: E402

from safefakes_jax.data import synthetic, wider  # noqa: E402
from safefakes_jax.evaluation import set_metrics  # noqa: E402
from tests import folders  # noqa: E402


def _copy(src, dst, method):
    assert not folders.anonymized_copy(src, dst, name=method).failed
    return str(dst)


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp('sets')
    src = root / 'wider'
    synthetic.generate(src, 4, 0, seed=3, workers=1, progress=False, width=480)
    return str(src), {m: _copy(src, root / f'wider_{m}', m) for m in ('blur', 'blackout')}


def test_blur_is_closer_than_blackout_and_fid_is_unavailable(sets, tmp_path):
    src, copies = sets
    names = ('l1', 'l2', 'psnr', 'ssim', 'lpips', 'fid', 'fid_dlib', 'identity')
    got = {
        m: set_metrics.compute(
            src, path, metrics=names, batch_size=16, fid_weights=str(tmp_path), progress=False
        )
        for m, path in copies.items()
    }
    blur, black = got['blur']['metrics'], got['blackout']['metrics']
    assert got['blur']['faces'] == got['blackout']['faces'] >= 10
    for name in ('l1', 'l2', 'lpips'):
        assert 0 < blur[name] < black[name], name
    assert blur['ssim'] > black['ssim'] and blur['psnr'] > black['psnr']
    assert blur['fid'] is None and 'format=fid_inception' in got['blur']['unavailable']['fid']
    # Identity on the few cartoon faces >= 40 px here: present and in range (its direction is
    # tested on a real face, test_identity_metrics.py).
    for m in (blur, black):
        assert m['identity']['faces'] == got['blur']['metrics']['identity']['faces'] > 0
        assert 0 <= m['identity']['rank1'] <= m['identity']['rank5'] <= 1
        assert m['identity']['mean_distance'] > 0 and m['fid_dlib'] > 0
        assert 'rank1_identity' in m['identity']  # The synthetic sidecar's labels.
    assert got['blur']['method'] == 'blur'


def test_an_unaltered_copy_is_identical(sets, tmp_path):
    src, _ = sets
    same = tmp_path / 'same'
    shutil.copytree(src, same)
    out = set_metrics.compute(src, str(same), metrics=('l1', 'ssim', 'psnr'), progress=False)
    assert out['metrics']['l1'] == 0 and out['metrics']['ssim'] == pytest.approx(1, abs=1e-5)
    assert out['metrics']['psnr'] is None and out['metrics']['psnr_identical_faces'] == out['faces']
    assert out['skipped']['small'] > 0  # Faces under 10 px: counted, not measured.


def test_cli_writes_json_and_refuses_mismatched_sets(sets, tmp_path, capsys):
    src, copies = sets
    out = tmp_path / 'm' / 'blur.json'
    args = ['--orig', src, '--anon', copies['blur'], '--metrics', 'l1,l2', '--no_progress']
    assert metrics_cli.main([*args, '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result['metrics']) == {'l1', 'l2'} and result['metrics']['l1'] > 0
    # A copy whose boxes differ from the original's is another set.
    other = tmp_path / 'other'
    shutil.copytree(copies['blur'], other)
    txt = wider.split_paths(str(other), 'train')[0]
    lines = open(txt).read().split('\n')
    lines[2] = ' '.join(str(int(v) + 1) if i < 4 else v for i, v in enumerate(lines[2].split()))
    open(txt, 'w').write('\n'.join(lines))
    assert metrics_cli.main([*args[:2], '--anon', str(other), '--out', str(out)]) == 2
    assert 'other boxes' in capsys.readouterr().err
    assert metrics_cli.main([*args[:2], '--anon', str(tmp_path / 'nope'), '--out', str(out)]) == 2
    assert 'not found' in capsys.readouterr().err
    assert metrics_cli.main([*args, '--metrics', 'l3', '--out', str(out)]) == 2
    assert 'unknown metrics' in capsys.readouterr().err
    assert np.isfinite(result['metrics']['l2'])
