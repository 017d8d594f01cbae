"""The FID Inception network (pool3, 2048-d) as a Flax module, and its PyTorch weight mapping.

Follows pytorch-fid 0.3.0's `InceptionV3([3], resize_input=True, normalize_input=True)` in
eval mode (`src/pytorch_fid/inception.py`, the TF `inception-2015-12-05` graph ported to
`pt_inception-2015-12-05-6726825d.pth`), 21,785,568 parameters:

* input float32 [N, H, W, 3] NHWC RGB in [0, 1], any H x W; resized to 299 x 299 bilinearly
  as torch's `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing: half-pixel
  centres, edge samples clamped), then scaled to [-1, 1];
* every `BasicConv2d` is conv (no bias, explicit zero padding as torch's) -> BatchNorm (eps
  1e-3, the running statistics) -> ReLU;
* the stem (Conv2d_1a_3x3 s2, 2a, 2b, max pool 3/2, 3b, 4a, max pool 3/2), Mixed_5b-d
  (`FIDInceptionA`), 6a, 6b-e (`FIDInceptionC`), 7a, Mixed_7b (`FIDInceptionE_1`), Mixed_7c
  (`FIDInceptionE_2`), then the mean over the final 8 x 8 -> [N, 2048];
* the FID variant's differences from torchvision's InceptionV3: the branch pools of Mixed_5b-d,
  6b-e and 7b are 3 x 3 stride-1 average pools that do not count the padding (TF semantics),
  and Mixed_7c's branch pool is a max pool. No fc / aux logits are built (the .pth's `fc.*`
  is accepted and ignored).

`params_from_torch_state_dict(sd)` maps the state dict (numpy arrays) to
`{'params', 'batch_stats'}`: per BasicConv2d `<p>.conv.weight` [O, I, kh, kw] -> `conv/kernel`
HWIO, `<p>.bn.weight|bias` -> `bn/scale|bias`, `<p>.bn.running_mean|running_var` ->
`batch_stats` `bn/mean|var` (`num_batches_tracked` ignored). `<p>` is the torchvision-style
name of the .pth (`Mixed_5b.branch1x1`) or pytorch-fid's wrapper name (`blocks.2.0.branch1x1`;
`TORCH_BLOCKS`); both are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

SIZE = 299
# pytorch-fid's `blocks.<i>.<j>` -> the module's name (pools have no parameters).
TORCH_BLOCKS = {
    'blocks.0.0': 'Conv2d_1a_3x3',
    'blocks.0.1': 'Conv2d_2a_3x3',
    'blocks.0.2': 'Conv2d_2b_3x3',
    'blocks.1.0': 'Conv2d_3b_1x1',
    'blocks.1.1': 'Conv2d_4a_3x3',
    'blocks.2.0': 'Mixed_5b',
    'blocks.2.1': 'Mixed_5c',
    'blocks.2.2': 'Mixed_5d',
    'blocks.2.3': 'Mixed_6a',
    'blocks.2.4': 'Mixed_6b',
    'blocks.2.5': 'Mixed_6c',
    'blocks.2.6': 'Mixed_6d',
    'blocks.2.7': 'Mixed_6e',
    'blocks.3.0': 'Mixed_7a',
    'blocks.3.1': 'Mixed_7b',
    'blocks.3.2': 'Mixed_7c',
}
NUM_CONVS = 94


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: int | Sequence[int]
    stride: int = 1
    padding: int | Sequence[int] = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = _pair(self.padding)
        x = nn.Conv(
            self.features,
            _pair(self.kernel),
            self.stride,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name='conv',
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
        return nn.relu(x)


def _avg_pool(x: jax.Array) -> jax.Array:
    """3 x 3 stride 1 pad 1, the padding not counted (TF's, pytorch-fid's FID blocks)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int = 2, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    """Mixed_5b-d (`FIDInceptionA`)."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, 1, name='branch1x1')(x)
        b5 = BasicConv2d(48, 1, name='branch5x5_1')(x)
        b5 = BasicConv2d(64, 5, padding=2, name='branch5x5_2')(b5)
        b3 = BasicConv2d(64, 1, name='branch3x3dbl_1')(x)
        b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(b3)
        b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_3')(b3)
        bp = BasicConv2d(self.pool_features, 1, name='branch_pool')(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, 3, stride=2, name='branch3x3')(x)
        bd = BasicConv2d(64, 1, name='branch3x3dbl_1')(x)
        bd = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(bd)
        bd = BasicConv2d(96, 3, stride=2, name='branch3x3dbl_3')(bd)
        return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-e (`FIDInceptionC`)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        b1 = BasicConv2d(192, 1, name='branch1x1')(x)
        b7 = BasicConv2d(c, 1, name='branch7x7_1')(x)
        b7 = BasicConv2d(c, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
        bd = BasicConv2d(c, 1, name='branch7x7dbl_1')(x)
        bd = BasicConv2d(c, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
        bd = BasicConv2d(c, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
        bd = BasicConv2d(c, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
        bp = BasicConv2d(192, 1, name='branch_pool')(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, 1, name='branch3x3_1')(x)
        b3 = BasicConv2d(320, 3, stride=2, name='branch3x3_2')(b3)
        b7 = BasicConv2d(192, 1, name='branch7x7x3_1')(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
        b7 = BasicConv2d(192, 3, stride=2, name='branch7x7x3_4')(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (`FIDInceptionE_1`: average branch pool) and Mixed_7c (`FIDInceptionE_2`: max)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, 1, name='branch1x1')(x)
        b3 = BasicConv2d(384, 1, name='branch3x3_1')(x)
        b3 = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
            ],
            axis=-1,
        )
        bd = BasicConv2d(448, 1, name='branch3x3dbl_1')(x)
        bd = BasicConv2d(384, 3, padding=1, name='branch3x3dbl_2')(bd)
        bd = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
            ],
            axis=-1,
        )
        pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool(x)
        bp = BasicConv2d(192, 1, name='branch_pool')(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(x: jax.Array, size: int = SIZE) -> jax.Array:
    """torch's `F.interpolate(mode='bilinear', align_corners=False)` without antialiasing."""
    n, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    return jax.image.resize(x, (n, size, size, c), 'bilinear', antialias=False)


class FIDInception(nn.Module):
    """The FID Inception (module docstring): [N, H, W, 3] in [0, 1] -> float32 [N, 2048]."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = resize_bilinear(jnp.asarray(images, jnp.float32)) * 2.0 - 1.0
        x = BasicConv2d(32, 3, stride=2, name='Conv2d_1a_3x3')(x)
        x = BasicConv2d(32, 3, name='Conv2d_2a_3x3')(x)
        x = BasicConv2d(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
        x = _max_pool(x)
        x = BasicConv2d(80, 1, name='Conv2d_3b_1x1')(x)
        x = BasicConv2d(192, 3, name='Conv2d_4a_3x3')(x)
        x = _max_pool(x)
        x = InceptionA(32, name='Mixed_5b')(x)
        x = InceptionA(64, name='Mixed_5c')(x)
        x = InceptionA(64, name='Mixed_5d')(x)
        x = InceptionB(name='Mixed_6a')(x)
        for name, c in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
            x = InceptionC(c, name=name)(x)
        x = InceptionD(name='Mixed_7a')(x)
        x = InceptionE(name='Mixed_7b')(x)
        x = InceptionE(max_pool=True, name='Mixed_7c')(x)
        return jnp.mean(x, axis=(1, 2))


def _module_prefix(key: str) -> str:
    """A torch prefix in either naming (module docstring) as the .pth's name."""
    for wrapper, name in TORCH_BLOCKS.items():
        if key == wrapper or key.startswith(wrapper + '.'):
            return name + key[len(wrapper) :]
    return key


_KEY = re.compile(r'^(?P<module>.+)\.(?P<kind>conv|bn)\.(?P<leaf>\w+)$')
_LEAVES = {
    ('conv', 'weight'): ('params', 'kernel'),
    ('bn', 'weight'): ('params', 'scale'),
    ('bn', 'bias'): ('params', 'bias'),
    ('bn', 'running_mean'): ('batch_stats', 'mean'),
    ('bn', 'running_var'): ('batch_stats', 'var'),
}


def params_from_torch_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """`{'params', 'batch_stats'}` of `FIDInception` from pytorch-fid's state dict (module
    docstring); numpy arrays in, float32 numpy arrays out.

    Raises:
      ValueError: unknown, missing or misshapen keys (all of them listed).
    """
    want = traverse_util.flatten_dict(_shapes())
    got: dict[tuple, np.ndarray] = {}
    problems = []
    for key, value in sd.items():
        name = _module_prefix(key)
        m = _KEY.match(name)
        if name.startswith('fc.') or (m and m['leaf'] == 'num_batches_tracked'):
            continue  # The classifier and BatchNorm's step counter: not used by FID.
        leaf = _LEAVES.get((m['kind'], m['leaf'])) if m else None
        if leaf is None:
            problems.append(f'unexpected key {key}')
            continue
        path = (leaf[0], *m['module'].split('.'), m['kind'], leaf[1])
        array = np.asarray(value, np.float32)
        if leaf[1] == 'kernel':
            array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
        if path not in want:
            problems.append(f'unexpected key {key}')
        elif array.shape != want[path]:
            problems.append(f'{key}: shape {np.shape(value)}, expected {want[path]} (HWIO)')
        else:
            got[path] = np.ascontiguousarray(array)
    problems += [f'missing {"/".join(p)}' for p in want if p not in got and not problems]
    if problems:
        raise ValueError('FID Inception state dict: ' + '; '.join(problems[:10]))
    return traverse_util.unflatten_dict(got)


def _shapes() -> dict:
    """The variables' shapes (abstract init, nothing computed)."""
    abstract = jax.eval_shape(
        FIDInception().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3), jnp.float32)
    )
    return jax.tree.map(lambda x: tuple(x.shape), abstract)
