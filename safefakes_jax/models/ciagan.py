"""CIAGAN's generator and discriminator as Flax Linen modules, and the PyTorch weight mapping.

Follows `dvl-tum/ciagan` `source/arch/arch_unet_flex.py` (`Generator`, `Discriminator`,
`ResidualBlockDown`, `ResidualBlockUp`, `ResidualBlock`, `ConvLayer`) and `util_func.py`
(`weights_init`); reference §2. `Generator()` is the 128x128, 1,200-identity net with
11,801,123 parameters, `Discriminator()` the 128x128 critic with 18,233,409; the identity
(Siamese) network is `models/siamese_resnet.py`.

Generator (every conv is `gan_layers.SNConv`: reflection pad + spectral norm; IN =
`gan_layers.instance_norm`, affine):

* input `concat([landmarks_image, masked_face], -1)`, 6 channels in [0, 1], landmarks first;
* encoder `conv{j}` = ResBlockDown (relu, 3x3, relu, 3x3, 2x2 avg pool; shortcut 1x1 then
  pool) then `in{j}_e`, channels 32, 64, 128, 256, 256 (j = 0..4) down to 4x4;
* identity: one-hot -> `encode_one_hot` MLP 1200-256-256-256-256-512-512-512 (LeakyReLU 0.2
  after every layer) -> the torch [N, 32, 4, 4] view (NHWC: `reshape(N, 32, 4, 4)` then
  `transpose(0, 2, 3, 1)`) -> `encode_noise` (3x3 32->64, 64->128, 128->256, each followed
  by LeakyReLU 0.2 then IN) -> concatenated after the encoder output -> `embed` (3x3 to 256,
  IN); without a one-hot this branch is skipped, as the original's `onehot=None`;
* bottleneck `res1..4`: conv, IN, relu, conv, IN, plus x;
* decoder `deconv{j}` = ResBlockUp (IN, relu, nearest x2, 3x3, IN, relu, 3x3; shortcut
  nearest x2 then 1x1) then `in{j}_d`, channels 256, 128, 64, 32, 16 (j = 4..0);
* `conv_end`: a plain 3x3 conv (zero pad 1, no spectral norm) to 3 channels, no activation:
  the raw output, before the caller composites `clip(y * mask + face * (1 - mask), 0, 1)`.

Init as `weights_init`: every generator conv kernel (spectral-norm ones included: the hook's
`weight` shares `weight_orig`'s storage) Xavier-normal, bias 0.01; the MLP keeps PyTorch's
default. The discriminator keeps PyTorch's defaults (`gan_layers.torch_default_init`; biases
0 here, PyTorch draws them uniform: a deviation of the init only).

Discriminator: `concat([image, landmarks_image], -1)` -> ResBlockDown `conv1..conv5` to 64,
128, 256, 512, 512 channels (no normalisation) -> flatten in PyTorch's NCHW order (8,192) ->
`dense0` 1024 -> LeakyReLU -> `dense1` 1 -> LeakyReLU (sic: kept, reference §4 decision 16).

Generalisation for small configs (the paper's net is `resolution=128, width=1`): `resolution`
R (a power of two, 16..128) keeps the last log2(R / 4) encoder levels and the first log2(R / 4)
decoder levels (R = 64: no `conv0` / `deconv0`, as the original's `img_size=64`; its
`conv_end` then reads 32 channels, where the original would break reading 16), and the
discriminator's first log2(R / 4) blocks; `width` scales every channel count except the
identity code (512 = 32 x 4 x 4) and the RGB ends; `num_classes` is the one-hot size.

PyTorch names (`torch_key_shapes`): the flax path joined with '.' (`embed_0` -> `embed.0`);
an `SNConv` X has `X.conv2d.weight_orig` [O, I, kh, kw], `X.conv2d.bias` [O],
`X.conv2d.weight_u` [O] and `X.conv2d.weight_v` [I * kh * kw]; IN `weight`, `bias`; Linear
`weight` [out, in], `bias`. 248 keys for the generator.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from safefakes_jax.models.gan_layers import (
    SNConv,
    avg_pool,
    instance_norm,
    torch_default_init,
    upsample_nearest,
)

NUM_CLASSES = 1200
CODE_SHAPE = (32, 4, 4)  # The identity code as the original views it (C, H, W).
ENCODER = (32, 64, 128, 256, 256)  # conv0 .. conv4 at 128x128.
DECODER = (256, 128, 64, 32, 16)  # deconv4 .. deconv0.
MLP = (256, 256, 256, 256, 512, 512, 512)
NOISE = (64, 128, 256)
CRITIC = (64, 128, 256, 512, 512)  # conv1 .. conv5.
DENSE = 1024


def levels(resolution: int) -> int:
    """Down-sampling levels to the 4x4 bottleneck: log2(resolution / 4) (5 at 128)."""
    n = int(math.log2(resolution)) - 2 if resolution > 0 else -1
    if resolution != 4 * 2**n or not 2 <= n <= 5:
        raise ValueError(f'resolution must be 16, 32, 64 or 128, got {resolution}')
    return n


def _ch(c: int, width: float) -> int:
    return max(1, round(c * width))


class ResBlockDown(nn.Module):
    """`ResidualBlockDown`: relu-conv3-relu-conv3-pool plus a pooled 1x1 shortcut."""

    features: int
    kernel_init: Any
    bias_init: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(kernel_init=self.kernel_init, bias_init=self.bias_init, dtype=self.dtype)
        out = SNConv(self.features, 3, name='conv_r1', **kw)(nn.relu(x), train)
        out = SNConv(self.features, 3, name='conv_r2', **kw)(nn.relu(out), train)
        short = SNConv(self.features, 1, name='conv_l', **kw)(x, train)
        return avg_pool(out) + avg_pool(short)


class ResBlockUp(nn.Module):
    """`ResidualBlockUp`: IN-relu-up-conv3-IN-relu-conv3 plus an up-then-1x1 shortcut."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = nn.relu(instance_norm('norm_r1', self.dtype)(x))
        out = SNConv(self.features, 3, name='conv_r1', dtype=self.dtype)(
            upsample_nearest(out), train
        )
        out = nn.relu(instance_norm('norm_r2', self.dtype)(out))
        out = SNConv(self.features, 3, name='conv_r2', dtype=self.dtype)(out, train)
        short = SNConv(self.features, 1, name='conv_l', dtype=self.dtype)(
            upsample_nearest(x), train
        )
        return out + short


class ResBlock(nn.Module):
    """`ResidualBlock`: conv-IN-relu-conv-IN plus x."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = SNConv(self.features, 3, name='conv1', dtype=self.dtype)(x, train)
        out = nn.relu(instance_norm('in1', self.dtype)(out))
        out = SNConv(self.features, 3, name='conv2', dtype=self.dtype)(out, train)
        return instance_norm('in2', self.dtype)(out) + x


class Generator(nn.Module):
    """CIAGAN's generator (module docstring).

    Attributes:
        num_classes: identities of the one-hot (1,200 in the paper).
        resolution: input side (128 in the paper).
        width: channel multiplier (1.0 = the paper's net).
        dtype: compute dtype; parameters are float32.
    """

    num_classes: int = NUM_CLASSES
    resolution: int = 128
    width: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        landmarks_image: jax.Array,
        masked_face: jax.Array,
        identity_onehot: jax.Array | None,
        train: bool = False,
    ) -> jax.Array:
        """Generates [N, R, R, 3] from the landmark image, the masked face (both float
        [N, R, R, 3] in [0, 1]) and the target identity's one-hot [N, num_classes] (or None).
        `train` runs and stores the spectral-norm power iterations."""
        n_levels, w, dt = levels(self.resolution), self.width, self.dtype
        r = self.resolution
        for name, x in (('landmarks_image', landmarks_image), ('masked_face', masked_face)):
            if x.ndim != 4 or x.shape[1:] != (r, r, 3):
                raise ValueError(f'{name} must be [N, {r}, {r}, 3], got {x.shape}')
        conv_kw = dict(kernel_init=nn.initializers.glorot_normal(), bias_init=_BIAS, dtype=dt)
        x = jnp.concatenate([landmarks_image, masked_face], axis=-1)
        for j in range(5 - n_levels, 5):
            x = ResBlockDown(_ch(ENCODER[j], w), name=f'conv{j}', **conv_kw)(x, train)
            x = instance_norm(f'in{j}_e', dt)(x)
        if identity_onehot is not None:
            if identity_onehot.shape != (x.shape[0], self.num_classes):
                raise ValueError(
                    f'identity_onehot must be [{x.shape[0]}, {self.num_classes}], '
                    f'got {identity_onehot.shape}'
                )
            code = identity_onehot.astype(dt)
            for i, f in enumerate(MLP):
                f = f if i == len(MLP) - 1 else _ch(f, w)  # The code stays 32 x 4 x 4.
                dense = nn.Dense(
                    f, kernel_init=torch_default_init(), dtype=dt, name=f'encode_one_hot_{2 * i}'
                )
                code = nn.leaky_relu(dense(code), 0.2)
            code = code.reshape(-1, *CODE_SHAPE).transpose(0, 2, 3, 1)
            for i, f in enumerate(NOISE):
                code = SNConv(_ch(f, w), 3, name=f'encode_noise_{3 * i}', **conv_kw)(code, train)
                code = instance_norm(f'encode_noise_{3 * i + 2}', dt)(nn.leaky_relu(code, 0.2))
            x = jnp.concatenate([x, code.astype(x.dtype)], axis=-1)
            x = SNConv(_ch(256, w), 3, name='embed_0', **conv_kw)(x, train)
            x = instance_norm('embed_1', dt)(x)
        for i in range(1, 5):
            x = ResBlock(_ch(256, w), dtype=dt, name=f'res{i}')(x, train)
        for j in range(4, 4 - n_levels, -1):
            x = ResBlockUp(_ch(DECODER[4 - j], w), dtype=dt, name=f'deconv{j}')(x, train)
            x = instance_norm(f'in{j}_d', dt)(x)
        end = nn.Conv(
            3,
            (3, 3),
            padding=1,
            kernel_init=nn.initializers.glorot_normal(),
            bias_init=_BIAS,
            dtype=dt,
            name='conv_end_0',
        )
        return end(x).astype(jnp.float32)


_BIAS = nn.initializers.constant(0.01)


class Discriminator(nn.Module):
    """CIAGAN's critic on `concat([image, landmarks_image], -1)` (module docstring).

    Attributes:
        resolution: input side (128 in the paper).
        width: channel multiplier.
        dtype: compute dtype; parameters are float32.
    """

    resolution: int = 128
    width: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array, landmarks_image: jax.Array, train: bool = False):
        """Scores [N, 1] (after the final LeakyReLU) for images in [0, 1]."""
        kw = dict(
            kernel_init=torch_default_init(), bias_init=nn.initializers.zeros, dtype=self.dtype
        )
        x = jnp.concatenate([image, landmarks_image], axis=-1)
        for j in range(levels(self.resolution)):
            x = ResBlockDown(_ch(CRITIC[j], self.width), name=f'conv{j + 1}', **kw)(x, train)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # PyTorch's NCHW flatten.
        x = nn.leaky_relu(
            nn.Dense(
                _ch(DENSE, self.width),
                kernel_init=kw['kernel_init'],
                dtype=self.dtype,
                name='dense0',
            )(x),
            0.2,
        )
        x = nn.Dense(1, kernel_init=kw['kernel_init'], dtype=self.dtype, name='dense1')(x)
        return nn.leaky_relu(x, 0.2).astype(jnp.float32)


# --------------------------------------------------------------------------- PyTorch names

_SEQUENTIAL = re.compile(r'^(embed|encode_one_hot|encode_noise|conv_end)_(\d+)$')
_SN_LEAVES = {'kernel': 'weight_orig', 'bias': 'bias', 'u': 'weight_u', 'v': 'weight_v'}


def _oihw(shape: tuple) -> tuple:
    return (shape[3], shape[2], shape[0], shape[1])


@functools.lru_cache(maxsize=8)
def _key_table(num_classes: int, resolution: int, width: float) -> dict[str, tuple]:
    """torch key -> (flax path incl. the collection, flax shape, torch shape)."""
    r = resolution
    x = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
    onehot = jax.ShapeDtypeStruct((1, num_classes), jnp.float32)
    model = Generator(num_classes=num_classes, resolution=resolution, width=width)
    flat = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.key(0), x, x, onehot))
    sn_modules = {path[1:-1] for path in flat if path[0] == 'batch_stats'}
    table = {}
    for path, leaf in flat.items():
        modules, name, shape = path[1:-1], path[-1], tuple(leaf.shape)
        prefix = '.'.join(_SEQUENTIAL.sub(r'\1.\2', m) for m in modules)
        if modules in sn_modules:
            key = f'{prefix}.conv2d.{_SN_LEAVES[name]}'
            torch_shape = _oihw(shape) if name == 'kernel' else shape
        elif name == 'kernel':
            key = f'{prefix}.weight'
            torch_shape = _oihw(shape) if len(shape) == 4 else shape[::-1]
        else:  # InstanceNorm scale / bias, conv and linear bias.
            key, torch_shape = f'{prefix}.{"weight" if name == "scale" else name}', shape
        table[key] = (path, shape, torch_shape)
    return table


def torch_key_shapes(
    num_classes: int = NUM_CLASSES, resolution: int = 128, width: float = 1.0
) -> dict[str, tuple[int, ...]]:
    """The original generator's state-dict keys and shapes (248 keys at any size)."""
    return {k: v[2] for k, v in _key_table(num_classes, resolution, width).items()}


def params_from_torch_state_dict(
    sd: Mapping[str, Any],
    num_classes: int = NUM_CLASSES,
    resolution: int = 128,
    width: float = 1.0,
) -> dict[str, Any]:
    """The variables `{'params', 'batch_stats'}` of `Generator` from the original's state dict.

    Args:
        sd: the 248 keys of `arch_unet_flex.Generator().state_dict()` as they are (numpy
            arrays or anything `np.asarray` takes), spectral-norm triples included; a
            `module.` prefix (DataParallel) is removed.
        num_classes, resolution, width: the generator's size (the paper's by default).

    Returns:
        numpy float32 variables; evaluation with them uses the stored `u` and `v` as they are
        (no power iteration), so the outputs equal the PyTorch model's in `eval()` mode.

    Raises:
        ValueError: missing or unexpected keys, a shape that differs, or a non-finite value
            (the message lists them).
    """
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.') :]: v for k, v in sd.items()}
    table = _key_table(num_classes, resolution, width)
    missing = sorted(set(table) - set(sd))
    unexpected = sorted(set(sd) - set(table))
    if missing or unexpected:
        raise ValueError(
            f'not a CIAGAN generator state dict ({num_classes} identities, {resolution}x'
            f'{resolution}, width {width}): missing {_first(missing)}; '
            f'unexpected {_first(unexpected)}'
        )
    flat = {}
    for key, (path, shape, torch_shape) in table.items():
        value = np.asarray(sd[key], np.float32)
        if value.shape != torch_shape:
            raise ValueError(f'{key}: shape {value.shape}, expected {torch_shape}')
        if not np.all(np.isfinite(value)):
            raise ValueError(f'{key}: holds NaN or inf')
        if len(shape) == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
        elif len(shape) == 2:
            value = value.T
        flat[path] = np.ascontiguousarray(value)
    return traverse_util.unflatten_dict(flat)


def size_of_state_dict(sd: Mapping[str, Any]) -> tuple[int, int]:
    """(num_classes, resolution) of an original generator state dict: the one-hot size from
    `encode_one_hot.0.weight`, the resolution from its encoder levels (`conv0` .. `conv4`).

    Raises:
        ValueError: a state dict without those keys.
    """
    keys = {k[len('module.') :] if k.startswith('module.') else k for k in sd}
    first = 'encode_one_hot.0.weight'
    if first not in keys:
        raise ValueError(f'not a CIAGAN generator state dict: no {first}')
    value = sd.get(first, sd.get(f'module.{first}'))
    n_levels = sum(f'conv{j}.conv_r1.conv2d.weight_orig' in keys for j in range(5))
    if not 2 <= n_levels <= 5:
        raise ValueError('not a CIAGAN generator state dict: no encoder blocks conv0..conv4')
    return int(np.shape(value)[1]), 4 * 2**n_levels


def params_to_torch_state_dict(
    variables: Mapping[str, Any],
    num_classes: int = NUM_CLASSES,
    resolution: int = 128,
    width: float = 1.0,
) -> dict[str, np.ndarray]:
    """The inverse of `params_from_torch_state_dict` (for tests and for exporting)."""
    flat = traverse_util.flatten_dict(dict(variables))
    out = {}
    for key, (path, shape, _) in _key_table(num_classes, resolution, width).items():
        value = np.asarray(flat[path], np.float32)
        if len(shape) == 4:
            value = value.transpose(3, 2, 0, 1)
        elif len(shape) == 2:
            value = value.T
        out[key] = np.ascontiguousarray(value)
    return out


def _first(items: list[str], n: int = 6) -> str:
    if not items:
        return 'none'
    return ', '.join(items[:n]) + (f' (+{len(items) - n} more)' if len(items) > n else '')
