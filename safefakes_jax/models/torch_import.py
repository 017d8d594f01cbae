"""Import of PyTorch DSFD / VGG16 weights into Flax params, saved as orbax checkpoints.

The command line is `tools/convert_torch_weights.py` (`../shared/reference/dsfd.md` §10-11):

  python tools/convert_torch_weights.py --format=dsfd_vgg --src=dsfd_wider.pth --out=ckpt/dsfd
  python tools/convert_torch_weights.py --format=vgg16_reducedfc --src=vgg16_reducedfc.npz \\
      --out=ckpt/vgg16_reducedfc

Formats:

* `dsfd_vgg`: a full yx `DSFD_vgg` state dict (186 keys, `models.dsfd.torch_key_shapes`),
  mapped with `dsfd.params_from_torch_state_dict`; the checkpoint holds the full params.
* `vgg16_reducedfc`: the SSD / Caffe backbone (`{i}.weight`, `{i}.bias` for the 15 convs of
  `vgg.TORCH_INDEX`); the checkpoint holds the *partial* tree `{'vgg': ...}`. Trainers merge
  it into their freshly initialised params (`merge_params`), the rest keeps its init.

Input channel order: `DSFD` takes RGB images minus the per-channel mean (R 123, G 117, B 104).
Weights that expect BGR minus (104, 117, 123) (Caffe `vgg16_reducedfc`; `channel_order='bgr'`)
get the input-channel axis of the first conv (`vgg.0`) reversed, so our RGB input gives the
outputs the original network gives on the BGR input. yx DSFD checkpoints were trained on RGB
order (dsfd.md §10 quirk; `channel_order='rgb'`) and are copied as they are.

Checkpoint layout (`--out`): `checkpoint/` (orbax `StandardCheckpointer`, `{'params': ...}`)
and `conversion.json` (format, source, sha256, width, channel order). `load_converted` reads it.

Reading `.pth` / `.pt`: always `torch.load(path, map_location='cpu', weights_only=True)`. A
`.pth` is a pickle, and a plain pickle can run any code while it loads; the weights of the
reference systems are plain state dicts (tensors, or yx's `{'epoch': int, 'weight': ...}`),
which the weights-only unpickler reads, so nothing else is ever unpickled. A file that needs
more (a pickled model object, custom classes) is refused with a `ConversionError`; so is a
PyTorch too old for `weights_only` (< 1.13). `.npz` is read with `allow_pickle=False`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from safefakes_jax.models import dsfd
from safefakes_jax.models.vgg import TORCH_INDEX

FORMATS = ('dsfd_vgg', 'vgg16_reducedfc', 'deepprivacy_v1', 'fid_inception', 'ciagan')
CHANNEL_ORDERS = ('rgb', 'bgr')
# Channel order the source weights expect when `--channel_order` is not given.
DEFAULT_CHANNEL_ORDER = {
    'dsfd_vgg': 'rgb',
    'vgg16_reducedfc': 'bgr',
    'deepprivacy_v1': 'rgb',
    'fid_inception': 'rgb',
    'ciagan': 'rgb',
}
CHECKPOINT_SUBDIR = 'checkpoint'
INFO_FILE = 'conversion.json'

_NPZ_HOWTO = (
    'convert it to .npz where PyTorch is installed: '
    'numpy.savez(path, **{k: v.numpy() for k, v in sd.items()}) with '
    "sd = torch.load(src, map_location='cpu', weights_only=True) (for a yx checkpoint "
    "sd = sd['weight'])"
)
_FIRST_CONV = ('vgg', 'conv1_1', 'kernel')


class ConversionError(ValueError):
    """Bad input to the conversion (unreadable source, wrong keys or shapes, bad output)."""


def _unwrap(obj: Any) -> Mapping[str, Any]:
    """Returns the state dict inside yx's `{'weight': sd}` / `{'epoch', 'weight'}` wrapper."""
    if isinstance(obj, Mapping):
        for key in ('weight', 'state_dict'):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        return obj
    raise ConversionError(f'expected a state dict (a mapping), got {type(obj).__name__}')


def _to_numpy(obj: Any) -> Any:
    """Tensors -> numpy arrays, through nested mappings (other values as they are)."""
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj.detach().cpu().numpy() if hasattr(obj, 'detach') else obj


def read_state_dict(path: str | os.PathLike, unwrap: bool = True) -> dict[str, Any]:
    """Reads a PyTorch state dict from `.pth` / `.pt` / `.ckpt` (needs torch) or `.npz`.

    Args:
        path: a `.pth` / `.pt` file (`torch.load(..., weights_only=True)`: a plain state dict
            or yx's `{'epoch': .., 'weight': state_dict}`), or an `.npz` with the same keys.

        unwrap: take the state dict out of yx's wrapper; False returns what `torch.load`
            gave (nested mappings, tensors as numpy), e.g. a DeepPrivacy checkpoint.

    Returns:
        key -> numpy array.

    Raises:
        ConversionError: the file is missing, has another extension, or is a `.pth` while
            torch is not installed (the message says how to make an `.npz`), or a `.pth`
            that the weights-only unpickler refuses (it holds more than tensors and plain
            containers) or that this torch cannot read that way (torch < 1.13).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f'{path}: no such file')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.npz':
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise ConversionError(f'{path}: not a readable .npz ({e})') from e
    if ext in ('.pth', '.pt', '.ckpt'):
        try:
            import torch  # Optional: only for .pth sources.
        except ImportError:
            raise ConversionError(
                f'{path}: reading .pth needs PyTorch, which is not installed; {_NPZ_HOWTO}'
            ) from None
        try:
            # weights_only: tensors and plain containers only; no arbitrary unpickling.
            loaded = torch.load(path, map_location='cpu', weights_only=True)
        except TypeError as e:
            if 'weights_only' in str(e):  # torch < 1.13 has no such argument.
                raise ConversionError(
                    f'{path}: this PyTorch cannot load weights only (needs '
                    f'torch >= 1.13; a full unpickle is refused); '
                    f'{_NPZ_HOWTO}'
                ) from None
            raise ConversionError(f'{path}: torch.load failed (TypeError: {e})') from None
        except Exception as e:  # torch raises pickle.UnpicklingError, RuntimeError, ...
            raise ConversionError(
                f'{path}: torch.load(weights_only=True) refused or failed ({type(e).__name__}: '
                f'{" ".join(str(e).split())[:300]}); expected a plain state dict of tensors'
            ) from None
        if not unwrap:
            if not isinstance(loaded, Mapping):
                raise ConversionError(f'{path}: expected a mapping, got {type(loaded).__name__}')
            return _to_numpy(loaded)
        return {k: np.asarray(v) for k, v in _to_numpy(_unwrap(loaded)).items()}
    raise ConversionError(f'{path}: unknown extension {ext!r} (expected .pth, .pt, .ckpt or .npz)')


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def backbone_params_from_state_dict(
    state_dict: Mapping[str, Any], width: float = 1.0
) -> dict[str, Any]:
    """Maps a `vgg16_reducedfc` state dict (`{i}.weight/bias`) onto `{'vgg': params}`.

    A uniform `module.` and / or `vgg.` prefix is accepted. Conv weights go OIHW -> HWIO.

    Args:
        state_dict: key -> array, the 30 keys of the 15 backbone convs.
        width: channel multiplier of the target `DSFD`.

    Returns:
        The partial float32 numpy params tree `{'vgg': {'conv1_1': {...}, ...}}`.

    Raises:
        ConversionError: naming missing, unexpected or wrongly shaped keys.
    """
    state_dict = _strip_prefix(_strip_prefix(state_dict, 'module.'), 'vgg.')
    shapes = {
        k[len('vgg.') :]: s for k, s in dsfd.torch_key_shapes(width).items() if k.startswith('vgg.')
    }
    name_of = {str(i): name for name, i in TORCH_INDEX.items()}
    missing = [k for k in shapes if k not in state_dict]
    unexpected = sorted(k for k in state_dict if k not in shapes)
    mismatched = [
        f'{k}: {tuple(np.shape(state_dict[k]))} != expected {s}'
        for k, s in shapes.items()
        if k in state_dict and tuple(np.shape(state_dict[k])) != s
    ]
    problems = [
        f'{what} ({len(keys)}): {dsfd._first(keys)}'
        for what, keys in (
            ('missing keys', missing),
            ('unexpected keys', unexpected),
            ('shape mismatches', mismatched),
        )
        if keys
    ]
    if problems:
        raise ConversionError(
            f'state dict does not fit the VGG16 backbone of DSFD(width={width}): '
            + '; '.join(problems)
        )
    flat = {}
    for key in shapes:
        index, leaf = key.split('.')
        value = np.asarray(state_dict[key], dtype=np.float32)
        if leaf == 'weight':
            flat[('vgg', name_of[index], 'kernel')] = np.transpose(value, (2, 3, 1, 0))
        else:
            flat[('vgg', name_of[index], 'bias')] = value
    return traverse_util.unflatten_dict(flat)


def flip_input_channels(params: Mapping[str, Any]) -> dict[str, Any]:
    """Reverses the input-channel axis of the first conv (BGR-trained -> RGB input).

    Args:
        params: a params tree with `vgg/conv1_1/kernel` [3, 3, 3, C] (HWIO).

    Returns:
        A copy with that kernel's axis 2 reversed (other leaves shared).
    """
    flat = traverse_util.flatten_dict(dict(params))
    flat[_FIRST_CONV] = np.ascontiguousarray(np.asarray(flat[_FIRST_CONV])[:, :, ::-1, :])
    return traverse_util.unflatten_dict(flat)


def convert_state_dict(
    state_dict: Mapping[str, Any],
    fmt: str,
    width: float = 1.0,
    channel_order: str | None = None,
) -> dict[str, Any]:
    """Maps a state dict of format `fmt` to (full or partial) `DSFD` params.

    Args:
        state_dict: key -> array; for 'deepprivacy_v1' also the whole loaded checkpoint
            (`models.deepprivacy.state_dict_from_checkpoint` takes the EMA generator out).
        fmt: 'dsfd_vgg' (full params), 'vgg16_reducedfc' (`{'vgg': ...}` only),
            'deepprivacy_v1' (the DeepPrivacy generator's params) or 'fid_inception'
            (`models.inception.FIDInception`'s `{'params', 'batch_stats'}`) or 'ciagan' (the
            CIAGAN generator's `{'params', 'batch_stats'}`, its size read from the keys).
        width: channel multiplier of the target model.
        channel_order: channel order the source weights expect, 'rgb' or 'bgr'
            (None: `DEFAULT_CHANNEL_ORDER[fmt]`); 'bgr' flips the first conv's inputs.

    Returns:
        The float32 numpy params tree.

    Raises:
        ConversionError: unknown format / channel order, or keys / shapes that do not fit.
    """
    if fmt not in FORMATS:
        raise ConversionError(f'unknown format {fmt!r} (expected one of {FORMATS})')
    channel_order = channel_order or DEFAULT_CHANNEL_ORDER[fmt]
    if channel_order not in CHANNEL_ORDERS:
        raise ConversionError(f'unknown channel order {channel_order!r} (rgb or bgr)')
    if fmt == 'deepprivacy_v1':
        from safefakes_jax.models import deepprivacy

        try:
            sd = deepprivacy.state_dict_from_checkpoint(state_dict)
            return deepprivacy.params_from_torch_state_dict(sd, width=width)
        except (ValueError, AttributeError) as e:
            raise ConversionError(str(e)) from e
    if fmt == 'ciagan':
        from safefakes_jax.models import ciagan

        if channel_order != 'rgb':
            raise ConversionError('CIAGAN weights take RGB input (--channel_order rgb)')
        try:
            num_classes, resolution = ciagan.size_of_state_dict(state_dict)
            return ciagan.params_from_torch_state_dict(state_dict, num_classes, resolution, width)
        except ValueError as e:
            raise ConversionError(str(e)) from e
    if fmt == 'fid_inception':
        from safefakes_jax.models import inception

        if channel_order != 'rgb':
            raise ConversionError('fid_inception weights take RGB input (--channel_order rgb)')
        try:
            return inception.params_from_torch_state_dict(state_dict)
        except ValueError as e:
            raise ConversionError(str(e)) from e
    if fmt == 'dsfd_vgg':
        try:
            params = dsfd.params_from_torch_state_dict(state_dict, width=width)
        except ValueError as e:
            raise ConversionError(str(e)) from e
    else:
        params = backbone_params_from_state_dict(state_dict, width=width)
    return flip_input_channels(params) if channel_order == 'bgr' else params


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def save_converted(
    out_dir: str | os.PathLike,
    params: Mapping[str, Any],
    info: Mapping[str, Any],
    force: bool = False,
) -> None:
    """Writes `{'params': params}` (orbax) and `info` (conversion.json) to `out_dir`, atomically.

    Everything is written to a temporary sibling folder that is renamed onto `out_dir` at the
    end, so an interrupted run leaves no half-written checkpoint.

    Args:
        out_dir: the output folder; it must not exist or be empty unless `force`.
        params: the params tree (numpy or jax arrays).
        info: JSON-serialisable description of the conversion.
        force: replace an existing non-empty `out_dir`.

    Raises:
        ConversionError: `out_dir` exists, is not empty, and `force` is False; or is a file.
    """
    import orbax.checkpoint as ocp

    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ConversionError(f'{out_dir}: exists and is not a folder')
        if os.listdir(out_dir) and not force:
            raise ConversionError(f'{out_dir}: exists and is not empty (use --force to replace)')
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(out_dir)}.', suffix='.tmp')
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, CHECKPOINT_SUBDIR), {'params': dict(params)})
        checkpointer.wait_until_finished()
        checkpointer.close()
        with open(os.path.join(tmp, INFO_FILE), 'w', encoding='utf-8') as f:
            json.dump(dict(info), f, indent=2, sort_keys=True)
            f.write('\n')
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; outputs are meant to be shared.
        old = None
        if os.path.exists(out_dir):  # Empty, or replaced with --force.
            old = tempfile.mkdtemp(
                dir=parent, prefix=f'.{os.path.basename(out_dir)}.', suffix='.old'
            )
            os.rename(out_dir, os.path.join(old, 'x'))
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def _checkpoint_path(ckpt_dir: str | os.PathLike) -> str:
    ckpt_dir = os.path.abspath(os.fspath(ckpt_dir))
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f'{ckpt_dir}: no converted checkpoint here (the folder does not exist); create it '
            'with tools/convert_torch_weights.py'
        )
    sub = os.path.join(ckpt_dir, CHECKPOINT_SUBDIR)
    if os.path.isdir(sub):
        return sub
    if os.path.exists(os.path.join(ckpt_dir, '_CHECKPOINT_METADATA')):
        return ckpt_dir  # The orbax folder itself was given.
    raise FileNotFoundError(
        f'{ckpt_dir}: no converted checkpoint here (no {CHECKPOINT_SUBDIR}/ subfolder); create '
        'it with tools/convert_torch_weights.py'
    )


def load_converted(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Restores the params written by `tools/convert_torch_weights.py`.

    Args:
        ckpt_dir: the tool's `--out` folder (or its `checkpoint/` subfolder).

    Returns:
        The params tree (numpy arrays): full `DSFD` params for `dsfd_vgg`, `{'vgg': ...}` for
        `vgg16_reducedfc` (merge it into initialised params with `merge_params`), the
        variables `{'params', 'batch_stats'}` for `fid_inception`.

    Raises:
        FileNotFoundError: `ckpt_dir` does not exist or holds no converted checkpoint.
    """
    import orbax.checkpoint as ocp

    path = _checkpoint_path(ckpt_dir)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path)
    return restored['params']


def load_conversion_info(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads `conversion.json` of a converted checkpoint folder."""
    path = os.path.join(os.fspath(ckpt_dir), INFO_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: not found (not a convert_torch_weights.py output?)')
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def merge_params(params: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """Overwrites the leaves of `params` that `partial` has (e.g. the pretrained backbone).

    Args:
        params: the full (freshly initialised) params tree.
        partial: a subtree such as `{'vgg': ...}` from a `vgg16_reducedfc` conversion.

    Returns:
        A new tree: `params` with `partial`'s leaves put in.

    Raises:
        ValueError: `partial` has a path `params` lacks, or a leaf of another shape.
    """
    flat = traverse_util.flatten_dict(dict(params))
    for path, value in traverse_util.flatten_dict(dict(partial)).items():
        name = '/'.join(path)
        if path not in flat:
            raise ValueError(f'{name}: not a parameter of the target model')
        if tuple(np.shape(value)) != tuple(np.shape(flat[path])):
            raise ValueError(f'{name}: shape {np.shape(value)} != {np.shape(flat[path])}')
        flat[path] = value
    return traverse_util.unflatten_dict(flat)
