"""DSFD (VGG16) face detector as a Flax Linen module, and the PyTorch weight mapping.

Follows `DSFD` of yxlijun/DSFD.pytorch `models/DSFD_vgg.py` (`../shared/reference/dsfd.md`
§1-5, §11): the VGG16 backbone (`vgg.py`), extras, L2Norm, the top-down product path, six
FEMs, and one head set per shot (PAL). `DSFD()` has 49,793,432 parameters and, at 640x640,
34,125 anchors per shot (160² + 80² + 40² + 20² + 10² + 5², one per cell).

Forward (all 1x1 / 3x3 convs have a bias):

* first shot: L2Norm(of1..3) (scales 10/8/5), of4, of5, of6;
* top-down: out = ReLU(up(ReLU(td_k(prev)), size of lateral) * lat_k(of_j)); the laterals take
  the raw of1..of4 / of5 (not the L2Norm outputs), with no ReLU; the top level is
  conv7 = ReLU(td_0(of6));
* second shot: L2Norm(FEM(conv3/4/5)) (scales 10/8/5), FEM(convfc7_2), FEM(conv6), FEM(conv7);
* heads: a 3x3 pad-1 conv to 4 (loc) and to `num_classes` (conf) per source, NHWC-flattened
  per level and concatenated over the six levels.

Deviations:

* `up` is `jax.image.resize(..., 'bilinear')` (half-pixel centres), i.e. PyTorch
  `align_corners=False`. yx calls the legacy `F.upsample(mode='bilinear')`, whose
  `align_corners` default depends on the PyTorch version used for the released weights
  (unverified, dsfd.md §3). On the exact 2x maps of a 640 input the modern default matches.
* L2Norm has the same forward value; its gradient at an all-zero pixel is 0 instead of NaN.
* A `width` multiplier scales every channel count (1.0 = the paper's model; FEM splits are
  taken from the scaled count); heads and logits are returned in float32 whatever `dtype`.
* Convs start xavier-uniform with zero bias (yx's init of new layers, also for the backbone
  until pretrained VGG weights are loaded).

Flax names mirror the PyTorch state-dict keys: `extras_0` <-> `extras.0`, `fpn_fem_2/branch3_4`
<-> `fpn_fem.2.branch3.4`, `L2Normof1/scale` <-> `L2Normof1.weight`, `loc_pal2_5` <->
`loc_pal2.5`; backbone convs are `vgg/conv3_3` <-> `vgg.14` (`vgg.TORCH_INDEX`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from safefakes_jax.data.detection_augment import RGB_MEAN
from safefakes_jax.models.vgg import TORCH_INDEX, VGG16, conv_kernel_init, scaled

# Source channels of both shots at width 1 (dsfd.md §2 / §3 `fem_module` cfg).
SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)
L2NORM_SCALES = (10.0, 8.0, 5.0)
# (output channels of fpn_topdown.k), (output channels of fpn_latlayer.k).
_TOPDOWN_CHANNELS = (256, 512, 1024, 512, 512, 256)
_LATERAL_CHANNELS = (512, 1024, 512, 512, 256)


def preprocess(images: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """The model's input: uint8 RGB [B, H, W, 3] -> float (`dtype`) minus `RGB_MEAN`."""
    return (images.astype(jnp.float32) - jnp.asarray(RGB_MEAN, jnp.float32)).astype(dtype)


def upsample_product(x: jax.Array, lateral: jax.Array) -> jax.Array:
    """Bilinearly resizes `x` to the spatial size of `lateral` and multiplies them.

    Args:
        x: [B, h, w, C] top-down maps.
        lateral: [B, H, W, C] lateral maps.

    Returns:
        [B, H, W, C] elementwise product (yx `_upsample_prod`).
    """
    b, h, w, _ = lateral.shape
    up = jax.image.resize(x, (b, h, w, x.shape[-1]), method='bilinear', antialias=False)
    return up * lateral


def feature_map_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes of the six source maps (strides 4 .. 128) for an input size.

    Args:
        height: input height in pixels (>= 32).
        width: input width in pixels (>= 32).

    Returns:
        Six (h, w) pairs, equal to the head map sizes of `DSFD` (the prior grid).
    """

    def sizes(n: int) -> list[int]:
        n = n // 2 // 2  # conv1, conv2 pools -> of1
        of2 = -(-n // 2)  # ceil-mode pool
        of3 = of2 // 2
        of4 = of3 // 2  # pool5
        of5 = (of4 - 1) // 2 + 1  # 3x3 s2 p1
        return [n, of2, of3, of4, of5, (of5 - 1) // 2 + 1]

    hs, ws = sizes(height), sizes(width)
    if min(hs[:4] + ws[:4]) < 1:
        raise ValueError(f'input {height}x{width} is too small for DSFD (min 32x32)')
    return list(zip(hs, ws, strict=True))


class L2Norm(nn.Module):
    """Channel L2 normalisation with a learnable per-channel scale (yx `L2Norm`).

    y = scale_c * x / (sqrt(sum_c x²) + 1e-10), computed in float32.

    Attributes:
        scale_init: initial value of every channel's scale.
        dtype: output dtype.
    """

    scale_init: float
    dtype: Any = jnp.float32
    eps: float = 1e-10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises [..., C] maps over the last axis."""
        scale = self.param(
            'scale', nn.initializers.constant(self.scale_init), (x.shape[-1],), jnp.float32
        )
        x = x.astype(jnp.float32)
        sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
        positive = sq > 0
        # Double `where`: same value as sqrt(sq), finite gradient where a pixel is all zero.
        norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0) + self.eps
        return (scale * x / norm).astype(self.dtype)


class FEM(nn.Module):
    """Feature enhance module of yx DSFD (keeps the channel count C).

    Three branches of 3x3, dilation-3, pad-3 convs: branch1 C->i; branch2 C->i, ReLU, i->i;
    branch3 C->j, ReLU, j->j, ReLU, j->j, with i = C // 3 and j = C - 2i; concat, ReLU.

    Attributes:
        dtype: compute dtype; parameters are float32.
    """

    dtype: Any = jnp.float32

    def _conv(self, features: int, name: str) -> nn.Conv:
        return nn.Conv(
            features,
            (3, 3),
            padding=((3, 3), (3, 3)),
            kernel_dilation=(3, 3),
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Enhances [B, H, W, C] maps; returns [B, H, W, C]."""
        channels = x.shape[-1]
        inter = channels // 3
        inter1 = channels - 2 * inter
        b1 = self._conv(inter, 'branch1')(x)
        b2 = self._conv(inter, 'branch2_0')(x)
        b2 = self._conv(inter, 'branch2_2')(nn.relu(b2))
        b3 = self._conv(inter1, 'branch3_0')(x)
        b3 = self._conv(inter1, 'branch3_2')(nn.relu(b3))
        b3 = self._conv(inter1, 'branch3_4')(nn.relu(b3))
        return nn.relu(jnp.concatenate([b1, b2, b3], axis=-1))


class DSFD(nn.Module):
    """Dual Shot Face Detector with the VGG16 backbone (yx `DSFD_vgg`).

    Attributes:
        width: channel multiplier (1.0 = the paper's 49,793,432-parameter model).
        num_classes: classes of the conf heads (2: background, face).
        dtype: compute dtype; parameters are float32.
    """

    width: float = 1.0
    num_classes: int = 2
    dtype: Any = jnp.float32

    def _conv(
        self, name: str, features: int, kernel: int, stride: int = 1, scale: bool = True
    ) -> nn.Conv:
        pad = kernel // 2
        return nn.Conv(
            scaled(features, self.width) if scale else features,
            (kernel, kernel),
            strides=(stride, stride),
            padding=((pad, pad), (pad, pad)),
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Runs both shots.

        Args:
            images: [B, H, W, 3] float32 RGB images with the mean already subtracted
                (H, W >= 32; 640 in training).
            train: unused (no dropout / BatchNorm); kept for the trainers' common signature.

        Returns:
            Dict of float32 arrays: `loc1` [B, A, 4], `conf1` [B, A, num_classes] (logits),
            `loc2`, `conf2` (second shot), with A = sum of h*w over `feature_map_sizes`.
            The fused top-down maps are sown into `intermediates` (`conv3` .. `conv7`).
        """
        del train
        relu = nn.relu
        of1, of2, of3, of4 = VGG16(self.width, self.dtype, name='vgg')(images)

        x = relu(self._conv('extras_0', 256, 1)(of4))
        of5 = relu(self._conv('extras_1', 512, 3, stride=2)(x))
        x = relu(self._conv('extras_2', 128, 1)(of5))
        of6 = relu(self._conv('extras_3', 256, 3, stride=2)(x))

        shot1 = [
            L2Norm(s, self.dtype, name=f'L2Normof{i + 1}')(f)
            for i, (s, f) in enumerate(zip(L2NORM_SCALES, (of1, of2, of3), strict=True))
        ] + [of4, of5, of6]

        # Top-down product path, from the coarsest map (of6) to the finest (of1).
        td = [self._conv(f'fpn_topdown_{k}', c, 1) for k, c in enumerate(_TOPDOWN_CHANNELS)]
        lat = [self._conv(f'fpn_latlayer_{k}', c, 1) for k, c in enumerate(_LATERAL_CHANNELS)]
        fused = [relu(td[0](of6))]  # conv7
        for k, lateral_in in enumerate((of5, of4, of3, of2, of1)):
            x = relu(td[k + 1](fused[-1]))
            fused.append(relu(upsample_product(x, lat[k](lateral_in))))
        names = ('conv7', 'conv6', 'convfc7_2', 'conv5', 'conv4', 'conv3')
        for name, f in zip(names, fused, strict=True):
            self.sow('intermediates', name, f)
        fused = fused[::-1]  # conv3, conv4, conv5, convfc7_2, conv6, conv7

        shot2 = [FEM(self.dtype, name=f'fpn_fem_{k}')(f) for k, f in enumerate(fused)]
        for i, s in enumerate(L2NORM_SCALES):
            shot2[i] = L2Norm(s, self.dtype, name=f'L2Normef{i + 1}')(shot2[i])

        out = {}
        for shot, sources in ((1, shot1), (2, shot2)):
            for head, n_out in (('loc', 4), ('conf', self.num_classes)):
                maps = [
                    self._conv(f'{head}_pal{shot}_{k}', n_out, 3, scale=False)(src)
                    for k, src in enumerate(sources)
                ]
                flat = [m.reshape(m.shape[0], -1, n_out) for m in maps]
                out[f'{head}{shot}'] = jnp.concatenate(flat, axis=1).astype(jnp.float32)
        return out


# ----------------------------------------------------------------------------------------------
# PyTorch state-dict mapping.

# Registration order of the PyTorch module's top-level attributes (state-dict key order).
_TORCH_GROUPS = (
    'vgg', 'L2Normof1', 'L2Normof2', 'L2Normof3', 'extras', 'fpn_topdown', 'fpn_latlayer',
    'fpn_fem', 'L2Normef1', 'L2Normef2', 'L2Normef3', 'loc_pal1', 'conf_pal1', 'loc_pal2',
    'conf_pal2',
)  # fmt: skip
_LEAF_TO_TORCH = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight'}
_INDEXED = re.compile(r'^(.+)_(\d+)$')


def _flax_path_to_torch_key(path: tuple[str, ...]) -> str:
    """('fpn_fem_2', 'branch3_4', 'kernel') -> 'fpn_fem.2.branch3.4.weight'."""
    *modules, leaf = path
    if modules[0] == 'vgg':
        parts = ['vgg', str(TORCH_INDEX[modules[1]])]
    else:
        parts = []
        for m in modules:
            match = _INDEXED.match(m)
            parts.extend(match.groups() if match else (m,))
    return '.'.join([*parts, _LEAF_TO_TORCH[leaf]])


def _torch_sort_key(key: str) -> tuple:
    group, *middle, leaf = key.split('.')
    idx = tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in middle)
    return _TORCH_GROUPS.index(group), idx, leaf != 'weight'


@functools.lru_cache(maxsize=8)
def _key_table(width: float, num_classes: int) -> dict[str, tuple[tuple[str, ...], tuple]]:
    """torch key -> (flax param path, flax shape), in PyTorch registration order."""
    model = DSFD(width=width, num_classes=num_classes)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)['params']
    flat = traverse_util.flatten_dict(shapes)
    table = {_flax_path_to_torch_key(p): (p, tuple(s.shape)) for p, s in flat.items()}
    return {k: table[k] for k in sorted(table, key=_torch_sort_key)}


def _torch_shape(flax_shape: tuple) -> tuple:
    if len(flax_shape) == 4:  # HWIO -> OIHW
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return flax_shape


def torch_key_shapes(width: float = 1.0, num_classes: int = 2) -> dict[str, tuple[int, ...]]:
    """Key -> shape table of the yx PyTorch `DSFD_vgg` state dict (registration order).

    Derived from the Flax parameter shapes (conv kernels OIHW), so it also describes the
    state dict of a width-scaled model.

    Args:
        width: channel multiplier of the model.
        num_classes: classes of the conf heads.

    Returns:
        Dict of 186 `key: shape` entries (e.g. `'vgg.31.weight': (1024, 512, 3, 3)`).
    """
    return {k: _torch_shape(s) for k, (_, s) in _key_table(width, num_classes).items()}


def params_from_torch_state_dict(
    state_dict: Mapping[str, Any], width: float = 1.0, num_classes: int = 2
) -> dict[str, Any]:
    """Maps a yx `DSFD_vgg` PyTorch state dict onto the `DSFD` Flax params.

    Conv weights are transposed OIHW -> HWIO (2, 3, 1, 0); biases and L2Norm weights are
    copied. A uniform `module.` prefix (DataParallel) is stripped.

    Args:
        state_dict: key -> array (numpy arrays, or anything `np.asarray` takes).
        width: channel multiplier of the target model.
        num_classes: classes of the conf heads.

    Returns:
        The nested float32 numpy `params` pytree (`model.apply({'params': params}, x)`).

    Raises:
        ValueError: naming missing or unexpected keys, or keys whose shape does not match.
    """
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.') :]: v for k, v in state_dict.items()}
    table = _key_table(width, num_classes)
    missing = [k for k in table if k not in state_dict]
    unexpected = sorted(k for k in state_dict if k not in table)
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {_first(missing)}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {_first(unexpected)}')
    flat = {}
    mismatched = []
    for key, (path, flax_shape) in table.items():
        if key not in state_dict:
            continue
        value = np.asarray(state_dict[key], dtype=np.float32)
        if value.shape != _torch_shape(flax_shape):
            mismatched.append(f'{key}: {value.shape} != expected {_torch_shape(flax_shape)}')
            continue
        flat[path] = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value
    if mismatched:
        problems.append(f'shape mismatches ({len(mismatched)}): {_first(mismatched)}')
    if problems:
        raise ValueError(
            f'state dict does not fit DSFD(width={width}, num_classes={num_classes}): '
            + '; '.join(problems)
        )
    return traverse_util.unflatten_dict(flat)


def params_to_torch_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of `params_from_torch_state_dict`: Flax params -> yx PyTorch state dict.

    Args:
        params: the `DSFD` params pytree (without the outer `{'params': ...}`).

    Returns:
        key -> float32 numpy array (conv weights OIHW), in PyTorch registration order.
    """
    flat = traverse_util.flatten_dict(dict(params))
    out = {}
    for path, value in flat.items():
        value = np.asarray(value, dtype=np.float32)
        key = _flax_path_to_torch_key(path)
        out[key] = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value
    return {k: out[k] for k in sorted(out, key=_torch_sort_key)}


def _first(items: list[str], n: int = 8) -> str:
    shown = ', '.join(items[:n])
    return shown + (f', ... (+{len(items) - n})' if len(items) > n else '')
