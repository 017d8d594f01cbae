"""Tests for the dataset anonymization engine and its CLI, on tiny synthetic WIDER sets."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import ml_collections
import numpy as np
import pytest

from configs.anonymize import blackout as blackout_config
from configs.anonymize import blur as blur_config
from safefakes_jax.anonymizers import base, conventional, engine
from safefakes_jax.data import manifest as mf
from safefakes_jax.data import synthetic, wider
from tests.folders import read_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A 6 + 3 image synthetic WIDER (320 px wide); image 1 of each split has no faces."""
    root = str(tmp_path_factory.mktemp('anon') / 'wider')
    synthetic.generate(root, 6, 3, seed=0, workers=1, progress=False, width=320)
    return root


def make_config(src, dst, method='blackout', **overrides):
    module = {'blackout': blackout_config, 'blur': blur_config}[method]
    config = module.get_config('smoke')
    config.src, config.dst, config.workers = str(src), str(dst), 1
    for key, value in overrides.items():
        if key.startswith('anonymizer.'):
            config.anonymizer[key.split('.', 1)[1]] = value
        else:
            config[key] = value
    return config


def manifest_entries(dst):
    with open(os.path.join(dst, mf.MANIFEST)) as f:
        return [json.loads(line) for line in f]


@dataclasses.dataclass(frozen=True)
class Noise(conventional.Blackout):
    """Fills each face with noise from the image's generator (tests seeding)."""

    def anonymize_face(self, original, out, face, rng):
        out[face.region] = rng.integers(0, 256, out[face.region].shape, dtype=np.uint8)


_CALLS = {'n': 0}


@dataclasses.dataclass(frozen=True)
class DiesOnThirdImage(conventional.Blackout):
    """Blackout (same name and params, so the same config hash) whose process dies."""

    how: str = 'interrupt'

    def params(self):
        return {'value': self.value}

    def anonymize(self, image, boxes, keypoints=None, rng=None):
        _CALLS['n'] += 1
        if _CALLS['n'] == 3:
            if self.how == 'kill':
                os._exit(3)  # A worker process dies mid-run.
            raise KeyboardInterrupt  # Ctrl-C in a single-process run.
        return super().anonymize(image, boxes, keypoints, rng)


def test_output_layout_and_exact_bytes(source, tmp_path):
    dst = tmp_path / 'out'
    summary = engine.run(make_config(source, dst, 'blur'), progress=False)
    assert not summary.failed and summary.processed == 6 and summary.resumed == 0
    # Annotations and evaluation ground truth copied unchanged; val not copied; the landmarks
    # sidecar (the original faces' geometry) only when asked for.
    for rel in (
        'wider_face_split/wider_face_train_bbx_gt.txt',
        'eval_tools/ground_truth/wider_hard_val.mat',
    ):
        with open(os.path.join(source, rel), 'rb') as a, open(dst / rel, 'rb') as b:
            assert a.read() == b.read(), rel
    assert not (dst / 'landmarks').exists()
    assert not (dst / 'WIDER_val').exists() and not (dst / 'face_crops').exists()
    assert not (dst / 'wider_face_split/wider_face_val_bbx_gt.txt').exists()
    assert not (dst / mf.PARTIAL).exists()
    anns = wider.read_bbx_gt(*wider.split_paths(source, 'train'))
    entries = manifest_entries(dst)
    assert [e['image'] for e in entries] == [a.name for a in anns]
    blur = base.create('blur')
    for ann, entry in zip(anns, entries, strict=True):
        with open(os.path.join(source, 'WIDER_train/images', ann.name), 'rb') as f:
            data = f.read()
        rgb = cv2.cvtColor(
            cv2.imread(os.path.join(source, 'WIDER_train/images', ann.name)), cv2.COLOR_BGR2RGB
        )
        result = blur(rgb, ann.boxes)
        _, expected = cv2.imencode(
            '.jpg', cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        out = (dst / 'WIDER_train/images' / ann.name).read_bytes()
        assert out == expected.tobytes()
        assert entry['faces'] == result.records and len(entry['faces']) == len(ann.boxes)
        assert entry['source_sha256'] == hashlib.sha256(data).hexdigest()
        assert entry['output_sha256'] == hashlib.sha256(out).hexdigest()
        assert entry['status'] == 'ok' and entry['method'] == 'blur'
    assert entries[1]['faces'] == []  # The 0-face image is still re-encoded and listed.
    config = json.loads((dst / mf.CONFIG_FILE).read_text())
    assert config['config_hash'] == entries[0]['config_hash'] == mf.config_hash(config['settings'])
    assert config['settings']['anonymizer'] == {
        'name': 'blur',
        'kernel': 25,
        'filter': 'box',
        'sigma': 0.0,
    }


def test_same_bytes_whatever_the_worker_count(source, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    engine.run(
        make_config(source, one, splits=('train', 'val')), progress=False, anonymizer=Noise()
    )
    engine.run(
        make_config(source, two, splits=('train', 'val'), workers=2),
        progress=False,
        anonymizer=Noise(),
    )
    files = read_tree(one)
    assert files == read_tree(two)
    assert any(f.startswith('WIDER_val/images/') for f in files)
    other_seed = tmp_path / 'seed1'
    engine.run(make_config(source, other_seed, seed=1), progress=False, anonymizer=Noise())
    name = 'WIDER_train/images/0--Parade/0_Parade_marchingband_0_0.jpg'
    assert read_tree(other_seed)[name] != files[name]


@pytest.mark.parametrize('how, workers', [('interrupt', 1), ('kill', 2)])
def test_resume_after_interruption(source, tmp_path, how, workers):
    reference, dst = tmp_path / 'reference', tmp_path / 'resumed'
    engine.run(make_config(source, reference), progress=False)
    _CALLS['n'] = 0
    error = KeyboardInterrupt if how == 'interrupt' else RuntimeError
    with pytest.raises(error):
        engine.run(
            make_config(source, dst, workers=workers),
            progress=False,
            anonymizer=DiesOnThirdImage(how=how),
        )
    assert (dst / mf.PARTIAL).exists() and not (dst / mf.MANIFEST).exists()
    if how == 'interrupt':  # Two images finished before Ctrl-C.
        assert len(mf.read_entries(str(dst / mf.PARTIAL))) == 2
        with open(dst / mf.PARTIAL, 'a') as f:
            f.write('{"split": "train", "ima')  # A line torn by the crash.
    summary = engine.run(make_config(source, dst, workers=workers), progress=False)
    assert summary.resumed + summary.processed == 6
    if how == 'interrupt':
        assert summary.resumed == 2
    assert read_tree(dst) == read_tree(reference)
    # An output edited after the fact is not trusted: redone, same bytes again.
    name = 'WIDER_train/images/0--Parade/0_Parade_marchingband_0_0.jpg'
    (dst / name).write_bytes(b'tampered')
    summary = engine.run(make_config(source, dst), progress=False)
    assert (summary.resumed, summary.processed) == (5, 1)
    assert read_tree(dst) == read_tree(reference)


def corrupt_copy(source, root):
    shutil.copytree(source, root, ignore=shutil.ignore_patterns('face_crops'))
    images = os.path.join(root, 'WIDER_train', 'images')
    anns = wider.read_bbx_gt(os.path.join(root, 'wider_face_split', 'wider_face_train_bbx_gt.txt'))
    truncated, garbage, missing = anns[2].name, anns[4].name, anns[5].name
    path = os.path.join(images, truncated)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[: len(data) * 2 // 3])
    with open(os.path.join(images, garbage), 'wb') as f:
        f.write(b'not an image')
    os.remove(os.path.join(images, missing))
    return anns, {
        truncated: 'failed:undecodable',
        garbage: 'failed:undecodable',
        missing: 'failed:missing_source',
    }


def test_cli_reports_corrupt_images_and_drops_them(source, tmp_path):
    src, dst = tmp_path / 'corrupt', tmp_path / 'corrupt_blackout'
    anns, bad = corrupt_copy(source, str(src))
    stale = dst / 'WIDER_train/images' / anns[2].name  # An old output must not survive.
    cmd = [
        sys.executable,
        os.path.join(REPO, 'launch/anonymize.py'),
        '--config=configs/anonymize/blackout.py:smoke',
        f'--config.src={src}',
        f'--config.dst={dst}',
        '--config.workers=1',
        '--config.copy_landmarks=true',
        '--quiet',
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    for name, status in bad.items():
        assert f'FAILED train {name}: {status}' in run.stdout
        assert not (dst / 'WIDER_train/images' / name).exists()
    assert '3 anonymized' in run.stdout and '3 failed' in run.stdout
    kept = wider.read_bbx_gt(*wider.split_paths(str(dst), 'train'), strict=True)
    assert [a.name for a in kept] == [a.name for a in anns if a.name not in bad]
    with open(dst / 'landmarks/train.jsonl') as f:
        assert [json.loads(line)['image'] for line in f] == [a.name for a in kept]
    statuses = {e['image']: e['status'] for e in manifest_entries(dst)}
    assert {n: s for n, s in statuses.items() if s != 'ok'} == bad
    # The same source fixed afterwards: the failed images are redone, nothing else.
    shutil.rmtree(src)
    shutil.copytree(source, src)
    summary = engine.run(make_config(src, dst), progress=False)
    assert (summary.resumed, summary.processed, summary.failed) == (3, 3, [])
    reference = tmp_path / 'reference'
    engine.run(make_config(source, reference), progress=False)
    assert read_tree(dst) == read_tree(reference)
    # Broken again: the earlier output of that image does not survive.
    (src / 'WIDER_train/images' / anns[2].name).write_bytes(b'')
    summary = engine.run(make_config(src, dst), progress=False)
    assert summary.failed == [('train', anns[2].name, 'failed:undecodable')]
    assert not stale.exists()


@dataclasses.dataclass(frozen=True)
class RaisesOnWide(conventional.Blackout):
    value: int = 200

    def anonymize_face(self, original, out, face, rng):
        if face.box[2] > 20:
            raise ValueError('cannot')
        out[face.region] = self.value


class BatchFails(conventional.Blackout):
    def anonymize_batch(self, items):
        raise RuntimeError('out of memory')


def test_fallbacks_in_the_manifest(source, tmp_path):
    summary = engine.run(
        make_config(source, tmp_path / 'a'), progress=False, anonymizer=RaisesOnWide()
    )
    anns = wider.read_bbx_gt(*wider.split_paths(source, 'train'))
    for ann, entry in zip(anns, manifest_entries(tmp_path / 'a'), strict=True):
        want = ['fallback:error:ValueError' if w > 20 else 'anonymized' for w in ann.boxes[:, 2]]
        assert entry['faces'] == want
    assert summary.records['fallback:error:ValueError'] > 0 and not summary.failed
    engine.run(make_config(source, tmp_path / 'b'), progress=False, anonymizer=BatchFails())
    faces = [f for e in manifest_entries(tmp_path / 'b') for f in e['faces']]
    assert faces and set(faces) == {'fallback:error:RuntimeError'}
    with pytest.raises(ValueError, match='cannot produce a dataset'):
        engine.run(make_config(source, tmp_path / 'c'), anonymizer=engine._IOFloor())


class NeedsKeypoints(conventional.Blackout):
    needs_keypoints = True

    def anonymize_face(self, original, out, face, rng):
        if face.keypoints is None:
            raise base.Fallback('no_keypoints')
        assert face.keypoints['keypoints7'].shape == (7, 3)
        assert face.keypoints['landmarks68'].shape == (68, 2)
        out[face.region] = 0


def test_keypoints_from_the_sidecar(source, tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(source, src, ignore=shutil.ignore_patterns('face_crops'))
    sidecar = src / 'landmarks/train.jsonl'
    records = [json.loads(line) for line in sidecar.read_text().splitlines()]
    records[0]['faces'][0]['box'][0] += 1  # Disagrees with the annotation: not used.
    sidecar.write_text(''.join(json.dumps(r) + '\n' for r in records))
    engine.run(make_config(src, tmp_path / 'kp'), progress=False, anonymizer=NeedsKeypoints())
    faces = [e['faces'] for e in manifest_entries(tmp_path / 'kp')]
    assert faces[0][0] == 'fallback:no_keypoints'
    assert set(faces[0][1:] + sum(faces[1:], [])) == {'anonymized'}


def test_refuses_to_mix_settings(source, tmp_path):
    dst = tmp_path / 'mixed'
    engine.run(make_config(source, dst, 'blur', **{'anonymizer.kernel': 9}), progress=False)
    with pytest.raises(ValueError, match='different settings'):
        engine.run(make_config(source, dst, 'blur'), progress=False)
    with pytest.raises(ValueError, match='different settings'):
        engine.run(
            make_config(source, dst, 'blur', **{'anonymizer.kernel': 9}, jpeg_quality=90),
            progress=False,
        )
    png = make_config(source, dst, 'blur', image_format='png', overwrite=True)
    engine.run(png, progress=False)
    files = read_tree(dst)
    assert not any(f.endswith('.jpg') for f in files)  # The old outputs were removed.
    foreign = tmp_path / 'foreign'  # E.g. the original dataset, given as dst by mistake.
    shutil.copytree(os.path.join(source, 'wider_face_split'), foreign / 'wider_face_split')
    with pytest.raises(ValueError, match='did not write'):
        engine.run(make_config(source, foreign), progress=False)
    with pytest.raises(ValueError, match='outside src'):
        engine.run(make_config(source, os.path.join(source, 'sub')), progress=False)


def test_io_floor_is_never_a_dataset(source, tmp_path):
    dst = tmp_path / 'floor'
    summary = engine.run(make_config(source, dst), progress=False, io_floor=True)
    assert summary.processed == 6 and set(summary.records) == {'skipped:io_floor'}
    assert (dst / mf.FLOOR_CONFIG).exists() and not (dst / mf.MANIFEST).exists()
    assert not (dst / 'wider_face_split').exists()  # No annotations: not a WIDER folder.
    with pytest.raises(ValueError, match='I/O-floor'):
        engine.run(make_config(source, dst), progress=False)
    with pytest.raises(KeyError):
        base.create('io_floor')


def test_png_output_feeds_the_training_pipeline(source, tmp_path):
    dst = str(tmp_path / 'png')
    config = make_config(
        source, dst, 'blur', image_format='png', splits=('train', 'val'), copy_landmarks=True
    )
    engine.run(config, progress=False)
    anns = wider.read_bbx_gt(*wider.split_paths(dst, 'train'), strict=True)
    assert all(a.name.endswith('.png') for a in anns)
    with open(os.path.join(dst, 'landmarks', 'train.jsonl')) as f:
        assert all(json.loads(line)['image'].endswith('.png') for line in f)
    src_anns = wider.read_bbx_gt(*wider.split_paths(source, 'train'))
    ann = src_anns[0]
    rgb = cv2.cvtColor(
        cv2.imread(os.path.join(source, 'WIDER_train/images', ann.name)), cv2.COLOR_BGR2RGB
    )
    want = base.create('blur')(rgb, ann.boxes).image
    png = cv2.imread(os.path.join(dst, 'WIDER_train/images', anns[0].name))
    np.testing.assert_array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), want)  # Lossless.

    from safefakes_jax.data import detection_pipeline, tfds_wider

    data_dir = str(tmp_path / 'tfds')
    examples = list(tfds_wider.load(dst, 'train', data_dir).as_numpy_iterator())
    by_name = {e['image/filename'].decode(): e for e in examples}
    assert by_name[anns[0].name]['image/format'] == b'png'
    np.testing.assert_array_equal(by_name[anns[0].name]['image'], want)
    train = detection_pipeline.make_train_dataset(
        dst,
        batch_size=2,
        image_size=96,
        max_boxes=8,
        data_dir=data_dir,
        process_index=0,
        process_count=1,
        shuffle_buffer=1,
    )
    batch = next(train.as_numpy_iterator())
    assert batch['image'].shape == (2, 96, 96, 3)
    evals = detection_pipeline.make_eval_dataset(
        dst,
        batch_size=2,
        image_size=96,
        max_boxes=8,
        data_dir=data_dir,
        process_index=0,
        process_count=1,
    )
    assert sum(b['_mask'].sum() for b in evals.as_numpy_iterator()) == 3


def test_configs():
    for name in ('blur', 'fullblur', 'pixelate', 'blackout'):
        module = __import__(f'configs.anonymize.{name}', fromlist=['get_config'])
        assert f'--config=configs/anonymize/{name}.py' in module.__doc__
        full, smoke = module.get_config(), module.get_config('smoke,val,seed=2')
        assert full.anonymizer.name == name and full.splits == ('train',)
        assert full.jpeg_quality == 95 and full.image_format == 'jpeg'
        assert smoke.src == 'cache/synthetic_wider'
        assert smoke.dst == f'cache/synthetic_wider_{name}'
        assert smoke.splits == ('train', 'val') and smoke.seed == 2
        assert full.dst == full.src + f'_{name}'
        base.create_from_config(full.anonymizer)  # Builds with the paper's settings.
        with pytest.raises(ValueError):
            module.get_config('no_such_arg')
    config = blur_config.get_config('smoke')
    config.src = '/data/x'  # dst follows src unless set.
    assert config.dst == '/data/x_blur'
    assert isinstance(config, ml_collections.ConfigDict)


@dataclasses.dataclass(frozen=True)
class DeviceBoundBlackout(conventional.Blackout):
    """A stand-in for a GAN on an accelerator: batched, device-bound, and never picklable (so
    it cannot reach a worker process); it logs the size of every batch it is given."""

    batch_size: int = 4
    device_bound = True
    calls: list = dataclasses.field(default_factory=list, compare=False)

    def params(self):
        return {'value': self.value}  # Same config hash as plain blackout.

    def __reduce__(self):
        raise TypeError('a device-bound method must stay in the driver process')

    def anonymize_batch(self, items):
        self.calls.append(len(items))
        return super().anonymize_batch(items)


@pytest.mark.parametrize('workers', [1, 2])
def test_device_bound_method_runs_once_in_fixed_batches_with_the_same_bytes(
    source, tmp_path, workers
):
    reference = tmp_path / 'reference'
    engine.run(make_config(source, reference, workers=2), progress=False)
    method = DeviceBoundBlackout()
    dst = tmp_path / f'device_{workers}'
    summary = engine.run(
        make_config(source, dst, workers=workers), progress=False, anonymizer=method
    )
    assert summary.processed == 6 and not summary.failed
    assert method.calls and set(method.calls) == {4}  # 6 images: 4 + (2 padded to 4).
    assert read_tree(dst) == read_tree(reference)
