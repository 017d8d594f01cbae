"""Tests for tools/model_summary.py (run as a subprocess: its absl flags stay out of pytest)."""

import os
import re
import subprocess
import sys

import pytest

from configs import dsfd_original

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_summary(config_arg: str, *extra: str) -> str:
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ''}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'tools', 'model_summary.py'),
            f'--config={config_arg}',
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_full_dsfd_count():
    out = run_summary('configs/dsfd_original.py')
    lines = out.strip().splitlines()
    assert lines[-1] == 'params[detector]=49793432'
    assert re.search(r'^vgg\s+30\s+20,483,904\s', out, re.M)
    assert re.search(r'^total\s+186\s+49,793,432$', out, re.M)


@pytest.mark.parametrize('variant', ['smoke'])
def test_variant_line_format_and_width(variant):
    config = dsfd_original.get_config(variant)
    width = config.model.width if 'model' in config and 'width' in config.model else 1.0
    out = run_summary(f'configs/dsfd_original.py:{variant}', '--per_param')
    assert 'vgg/conv1_1/kernel' in out  # The per-parameter table.
    match = re.fullmatch(r'params\[detector\]=(\d+)', out.strip().splitlines()[-1])
    assert match, out[-500:]
    count = int(match.group(1))
    assert count < 49793432 if width < 1.0 else count == 49793432


def test_paper_deepprivacy_counts():
    out = run_summary('configs/deepprivacy_fdf.py').strip().splitlines()
    assert out[-2:] == ['params[generator]=46924931', 'params[discriminator]=47149801']
    v1 = run_summary('configs/deepprivacy_fdf.py', '--config.model.discriminator=v1')
    assert v1.strip().splitlines()[-1] == 'params[discriminator]=45526361'
