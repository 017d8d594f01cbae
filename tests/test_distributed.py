"""Two processes on loopback (`jax.distributed`, gloo CPU collectives) train, checkpoint and
evaluate DSFD exactly like one process fed the same global batches.

Each process of a multi-process run reads its own shard of the train split, so a plain
1-process run trains on other batches. The reference is therefore `launch/train.py` in one
process with 2 CPU devices whose input pipeline is patched to yield what the two hosts read,
host 0's half first (the rows `jax.make_array_from_process_local_data` gives process 0). The
2-process run has one CPU device per process: same mesh size, same global batch. The three
processes run at once.
"""

import glob
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from safefakes_jax.data import synthetic, tfds_wider, wider

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_TAGS = (
    'train/loss',
    'train/loc1',
    'train/conf1',
    'train/loc2',
    'train/conf2',
    'train/grad_norm',
)
# Quick XLA CPU compiles (the tiny programs run in no time; compiling them is the cost).
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'

# The 1-process reference: launch/train.py with the pipeline of both hosts, concatenated.
REFERENCE = """
import runpy, sys
import tensorflow as tf
from safefakes_jax.data import detection_pipeline as dp
single = dp.make_train_dataset
def both_hosts(root, *, batch_size, **kwargs):
    halves = [single(root, batch_size=batch_size // 2, process_index=i, process_count=2,
                     **kwargs) for i in range(2)]
    return tf.data.Dataset.zip(tuple(halves)).map(
        lambda a, b: {k: tf.concat([a[k], b[k]], 0) for k in a})
dp.make_train_dataset = both_hosts
sys.argv[0] = 'launch/train.py'
runpy.run_path('launch/train.py', run_name='__main__')
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    return dict(
        os.environ,
        JAX_PLATFORMS='cpu',
        CUDA_VISIBLE_DEVICES='',
        TF_CPP_MIN_LOG_LEVEL='2',
        XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}',
    )


def _train_args(root: str, workdir: str) -> list[str]:
    return [
        '--config=configs/dsfd_original.py:tiny',
        f'--workdir={workdir}',
        f'--config.data.original_train_root={root}',
        f'--config.data.train_root={root}',
        f'--config.data.val_root={root}',
        '--config.data.batch_size=4',
        '--config.evals.final.batch_size=4',
    ]


def _scalars(workdir, tag: str) -> list[float]:
    """The values of a scalar summary, in step order."""
    import tensorflow as tf

    found = {}
    for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    return [found[s] for s in sorted(found)]


def _predictions(workdir) -> dict[str, np.ndarray]:
    """predictions/<event>/<image>.txt -> rows [N, 5] x y w h score."""
    paths = glob.glob(os.path.join(workdir, 'predictions', '*', '*.txt'))
    return {os.path.relpath(p, workdir): wider.read_prediction_file(p) for p in paths}


@pytest.fixture(scope='module', autouse=True)
def tfds_cache(tmp_path_factory):
    """The TFDS records of this module's folders (and its subprocesses') in a temp folder,
    never in the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('SAFEFAKES_TFDS_DIR', str(tmp_path_factory.mktemp('tfds_cache')))
        yield


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp('distributed')
    root = str(base / 'synthetic_wider')
    synthetic.generate(root, 8, 3, seed=0, workers=1, progress=False, width=128)
    tfds_wider.prepare(root)  # Once, here: the runs below must not prepare it at the same time.
    address = f'127.0.0.1:{_free_port()}'
    two, one = str(base / 'two_processes'), str(base / 'one_process')
    commands = [
        (
            [
                sys.executable,
                'launch/train.py',
                *_train_args(root, two),
                f'--coordinator_address={address}',
                '--num_processes=2',
                f'--process_id={i}',
            ],
            _env(1),
        )
        for i in range(2)
    ]
    commands.append(([sys.executable, '-c', REFERENCE, *_train_args(root, one)], _env(2)))
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for cmd, env in commands
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p, out in zip(('process 0', 'process 1', 'reference'), procs, outputs, strict=True):
        assert p.returncode == 0, f'{name} exited with {p.returncode}:\n{out[-5000:]}'
    return two, one


def test_two_processes_train_checkpoint_and_evaluate(runs):
    two, _ = runs
    manager = ocp.CheckpointManager(os.path.join(two, 'checkpoints'), item_names=('data',))
    assert manager.all_steps() == [2]  # Saved at the end.
    data = manager.restore(2, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
    assert data['step'] == 2 and len(data['next_position']) == 2  # One position per host.
    manager.close()
    results = json.load(open(os.path.join(two, 'results.json')))
    assert results['steps'] == 2
    assert all(
        math.isfinite(results[k]) and 0 <= results[k] <= 1 for k in ('easy', 'medium', 'hard')
    )
    assert os.path.exists(os.path.join(two, 'config.json'))
    assert len(_scalars(two, 'train/loss')) == 2  # Summaries: written by process 0 alone.


def test_two_processes_match_one_process_fed_the_same_global_batches(runs):
    two, one = runs
    for tag in LOSS_TAGS:
        a, b = _scalars(two, tag), _scalars(one, tag)
        assert len(a) == 2 and all(map(math.isfinite, a)), tag
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=tag)
    assert _scalars(two, 'train/loss')[0] != _scalars(two, 'train/loss')[1]
    # Evaluation: every val image predicted once, on one of the hosts, and gathered.
    preds_two, preds_one = _predictions(two), _predictions(one)
    assert sorted(preds_two) == sorted(preds_one) and len(preds_one) == 3
    assert sum(len(rows) for rows in preds_one.values()) > 0
    for name, rows in preds_one.items():
        np.testing.assert_allclose(preds_two[name], rows, rtol=1e-4, atol=1e-2, err_msg=name)
    ap_two = json.load(open(os.path.join(two, 'results.json')))
    ap_one = json.load(open(os.path.join(one, 'results.json')))
    for k in ('easy', 'medium', 'hard'):
        assert ap_two[k] == pytest.approx(ap_one[k], abs=1e-6)
