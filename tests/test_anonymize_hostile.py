"""Hostile and careless input to the anonymization engine: every case is refused with an error
naming the file (and line) before anything is written, nothing outside `dst` is touched, and
no face is reported anonymized that is not."""

import os
import shutil
import subprocess
import sys

import pytest

from configs.anonymize import blackout as blackout_config
from safefakes_jax.anonymizers import engine
from safefakes_jax.data import manifest as mf
from safefakes_jax.data import root_paths, synthetic, wider

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TXT = 'wider_face_split/wider_face_train_bbx_gt.txt'


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('hostile') / 'wider')
    synthetic.generate(root, 3, 1, seed=0, workers=1, progress=False, width=160)
    return root


@pytest.fixture
def world(pristine, tmp_path):
    """(src, dst, outside file): a fresh copy of the source next to a file that must survive."""
    src = tmp_path / 'src'
    shutil.copytree(pristine, src)
    outside = tmp_path / 'outside' / 'victim.jpg'
    outside.parent.mkdir()
    shutil.copy(next((src / 'WIDER_train/images').rglob('*.jpg')), outside)
    return src, tmp_path / 'dst', outside


def read_tree(root) -> dict[str, bytes | str]:
    """{relative path: bytes, or 'symlink -> target'} of everything under `root` (symlinks
    are recorded, never followed)."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = f'symlink -> {os.readlink(path)}'
            else:
                with open(path, 'rb') as f:
                    out[rel] = f.read()
    return out


def config(src, dst, **overrides):
    c = blackout_config.get_config('smoke')
    c.src, c.dst, c.workers = str(src), str(dst), 1
    c.update(overrides)
    return c


def first_name(src) -> str:
    return wider.read_bbx_gt(src / TXT)[0].name


def rename_in_txt(src, old: str, new: str) -> None:
    txt = src / TXT
    txt.write_text(txt.read_text().replace(old + '\n', new + '\n', 1))


def refused(src, dst, match: str, tree_root, **overrides) -> None:
    """Runs the engine, expects a ValueError matching `match`, and that nothing changed."""
    before = read_tree(tree_root)
    with pytest.raises(ValueError, match=match):
        engine.run(config(src, dst, **overrides), progress=False)
    assert read_tree(tree_root) == before


@pytest.mark.parametrize('bad', ['../../outside/victim.jpg', 'ABSOLUTE', '0--Parade/./x.jpg'])
def test_names_leaving_the_root_are_refused_with_file_and_line(world, bad):
    src, dst, outside = world
    bad = str(outside) if bad == 'ABSOLUTE' else bad
    rename_in_txt(src, first_name(src), bad)
    refused(src, dst, rf'{TXT}:1: .*must be relative', src.parent)
    assert not dst.exists()


def test_symlinks_out_of_src_or_dst_are_refused(world):
    src, dst, outside = world
    name = first_name(src)
    image = src / 'WIDER_train/images' / name
    image.unlink()
    image.symlink_to(outside)  # The annotation is fine; the file leads out of src.
    refused(src, dst, r'outside .*symlink', src.parent)
    image.unlink()
    shutil.copy(outside, image)
    # dst's images folder leads out of dst: the outside folder must not be written.
    (dst / 'WIDER_train').mkdir(parents=True)
    (dst / 'WIDER_train/images').symlink_to(outside.parent, target_is_directory=True)
    refused(src, dst, r'outside', src.parent)
    os.remove(dst / 'WIDER_train/images')
    (dst / 'wider_face_split').symlink_to(outside.parent, target_is_directory=True)
    refused(src, dst, r'outside', src.parent)


def test_overwrite_never_removes_what_a_hostile_manifest_lists(world):
    src, dst, outside = world
    engine.run(config(src, dst), progress=False)
    manifest = dst / mf.MANIFEST
    lines = manifest.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"output":"', f'"output":"../../../outside/{outside.name}#', 1)
    lines[1] = lines[1].replace('#', '","x":"', 1)
    manifest.write_text(''.join(lines))
    refused(src, dst, rf'{mf.MANIFEST}:2: .*must be relative', src.parent, seed=1, overwrite=True)
    assert outside.exists()


def test_duplicate_image_blocks_are_refused_naming_both_lines(world):
    src, dst, _ = world
    anns = wider.read_bbx_gt(src / TXT)
    txt = src / TXT
    txt.write_text(txt.read_text() + f'{anns[0].name}\n1\n1 1 4 4 0 0 0 0 0 0\n')
    refused(src, dst, r'listed twice \(lines 1 and \d+\)', src.parent)
    assert not dst.exists()


def test_two_sources_with_one_output_name_are_refused(world):
    src, dst, _ = world
    name = first_name(src)
    png = name[:-4] + '.png'
    shutil.copy(src / 'WIDER_train/images' / name, src / 'WIDER_train/images' / png)
    txt = src / TXT
    txt.write_text(txt.read_text() + f'{png}\n0\n0 0 0 0 0 0 0 0 0 0\n')
    refused(src, dst, rf'{png} and {name} \(line 1\) would both be written as {name}', src.parent)
    refused(src, dst, rf'would both be written as {png}', src.parent, image_format='png')


def test_only_validated_ground_truth_is_copied_never_images_or_symlink_targets(world):
    src, dst, outside = world
    gt = src / 'eval_tools/ground_truth'
    shutil.copy(outside, src / 'eval_tools' / 'face.jpg')
    shutil.copy(outside, gt / 'face.jpg')
    (src / 'eval_tools' / 'linked').symlink_to(outside)
    engine.run(config(src, dst), progress=False)
    copied = sorted(
        os.path.relpath(os.path.join(d, f), dst / 'eval_tools')
        for d, _, fs in os.walk(dst / 'eval_tools')
        for f in fs
    )
    assert copied == sorted(f'ground_truth/{f}' for f in os.listdir(gt) if f.endswith('.mat'))
    # A face image renamed .mat, and a .mat symlink out of src: refused, nothing written.
    shutil.rmtree(dst)
    shutil.copy(outside, gt / 'wider_face_val_extra.mat')
    refused(src, dst, r'wider_face_val_extra.mat: not a MATLAB ground-truth file', src.parent)
    os.remove(gt / 'wider_face_val_extra.mat')
    (gt / 'linked.mat').symlink_to(gt.parent.parent.parent / 'outside' / 'victim.jpg')
    refused(src, dst, r'outside', src.parent)


def test_landmarks_sidecar_only_on_request(world):
    src, dst, _ = world
    engine.run(config(src, dst), progress=False)
    assert not (dst / 'landmarks').exists()
    engine.run(config(src, dst, copy_landmarks=True), progress=False)
    assert (dst / 'landmarks/train.jsonl').read_bytes() == (
        src / 'landmarks/train.jsonl'
    ).read_bytes()
    engine.run(config(src, dst), progress=False)  # Not asked again: the copy goes.
    assert not (dst / 'landmarks/train.jsonl').exists()


@pytest.mark.parametrize('case', ['int32', 'non_utf8', 'bom', 'empty'])
def test_malformed_annotation_files_are_refused(world, case):
    src, dst, _ = world
    txt = src / TXT
    data = txt.read_bytes()
    if case == 'int32':
        lines = data.split(b'\n')
        lines[2] = b'1 1 99999999999 4 0 0 0 0 0 0'
        data, match = b'\n'.join(lines), rf'{TXT}:3: value out of the int32 range'
    elif case == 'non_utf8':
        data, match = data.replace(b'.jpg', b'\xe9.jpg', 1), rf'{TXT}:1: not valid UTF-8'
    elif case == 'bom':
        data, match = b'\xef\xbb\xbf' + data, rf'{TXT}:1: .*byte-order mark'
    else:
        data, match = b'', rf'{TXT}: lists no image'
    txt.write_bytes(data)
    refused(src, dst, match, src.parent)
    assert not dst.exists()


def _read_only_folder(path) -> bool:
    """Makes `path` a read-only folder (a read-only tmpfs for root); False if impossible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    ok = (
        subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(path)], capture_output=True
        ).returncode
        == 0
    )
    return ok


@pytest.mark.parametrize('case', ['file', 'dangling', 'read_only'])
def test_unusable_dst_exits_2_with_one_line_naming_it(world, case):
    src, _, _ = world
    dst = src.parent / 'dst_bad'
    if case == 'file':
        dst.write_text('not a folder')
    elif case == 'dangling':
        dst.symlink_to(src.parent / 'nowhere')
    elif not _read_only_folder(src.parent / 'ro'):
        pytest.skip('no read-only folder can be made here (root without mount)')
    target = src.parent / 'ro' / 'dst' if case == 'read_only' else dst
    before = read_tree(src.parent)
    try:
        run = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, 'launch/anonymize.py'),
                '--config=configs/anonymize/blackout.py:smoke',
                f'--config.src={src}',
                f'--config.dst={target}',
                '--config.workers=1',
                '--quiet',
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if case == 'read_only' and os.geteuid() == 0:
            subprocess.run(['umount', str(src.parent / 'ro')], check=True)
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip().splitlines()
    assert len(message) == 1 and str(target) in message[0], run.stderr
    assert {'file': 'not a folder', 'dangling': 'dangling symlink', 'read_only': 'not writable'}[
        case
    ] in message[0]
    assert read_tree(src.parent) == before


def test_root_paths_checks():
    for bad in ('', '/etc/passwd', '../x.jpg', 'a/../b.jpg', 'a//b.jpg', 'a\\b.jpg', 'a\0.jpg'):
        assert root_paths.name_problem(bad), bad
    assert root_paths.name_problem('0--Parade/0_Parade_1.jpg') is None
