"""VGG16 backbone of the DSFD face detector, as a Flax Linen module.

Follows the `vgg` cfg of yxlijun/DSFD.pytorch `models/DSFD_vgg.py` (the SSD "reduced fc"
VGG16 of `vgg16_reducedfc.pth`; `../shared/reference/dsfd.md` §2 and §10):

* conv1_1 .. conv5_3: 3x3 convs, pad 1, each followed by a ReLU;
* 2x2 stride-2 max pools after conv1_2, conv2_2, conv3_3 (ceil mode), conv4_3 and conv5_3
  (pool5; 2x2 s2 in yx, not SSD's 3x3 s1);
* conv6 (fc6): 3x3, dilation 3, pad 3, 1024 channels; conv7 (fc7): 1x1, 1024 channels; ReLUs.

The module returns the four DSFD source maps of1 (conv3_3, stride 4), of2 (conv4_3, stride 8),
of3 (conv5_3, stride 16) and of4 (conv7, stride 32), all after their ReLU.

Deviations: a `width` multiplier scales every channel count (1.0 is the original; small values
give a CPU smoke model), and the floor-mode pools drop a trailing odd row / column exactly like
PyTorch, while the ceil-mode pool pads it with -inf (equal to PyTorch's ceil mode for a 2x2 s2
pool without padding). Kernels are HWIO (PyTorch OIHW transposed by (2, 3, 1, 0)); the
PyTorch index of every conv is in `TORCH_INDEX`. Convs are initialised xavier-uniform with
zero bias (the yx init for new layers; the backbone normally comes from pretrained weights).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# (name, output channels) of the 3x3 pad-1 convs of VGG16, with 'pool' markers.
_CFG: tuple[tuple[str, int] | str, ...] = (
    ('conv1_1', 64), ('conv1_2', 64), 'pool',
    ('conv2_1', 128), ('conv2_2', 128), 'pool',
    ('conv3_1', 256), ('conv3_2', 256), ('conv3_3', 256), 'of1', 'pool_ceil',
    ('conv4_1', 512), ('conv4_2', 512), ('conv4_3', 512), 'of2', 'pool',
    ('conv5_1', 512), ('conv5_2', 512), ('conv5_3', 512), 'of3',
)  # fmt: skip

# Flax submodule name -> index in the PyTorch `vgg` nn.ModuleList (state-dict key `vgg.{i}.*`).
TORCH_INDEX: dict[str, int] = {
    'conv1_1': 0, 'conv1_2': 2, 'conv2_1': 5, 'conv2_2': 7,
    'conv3_1': 10, 'conv3_2': 12, 'conv3_3': 14,
    'conv4_1': 17, 'conv4_2': 19, 'conv4_3': 21,
    'conv5_1': 24, 'conv5_2': 26, 'conv5_3': 28,
    'conv6': 31, 'conv7': 33,
}  # fmt: skip

conv_kernel_init = nn.initializers.xavier_uniform()


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` scaled by the width multiplier (at least 1)."""
    if width == 1.0:
        return channels
    return max(1, int(round(channels * width)))


def max_pool_2x2(x: jax.Array, ceil_mode: bool = False) -> jax.Array:
    """2x2 stride-2 max pool over NHWC maps, PyTorch `nn.MaxPool2d(2, 2[, ceil_mode])`.

    Args:
        x: [B, H, W, C] maps.
        ceil_mode: output ceil(H / 2) x ceil(W / 2) (odd edges padded with -inf) instead of
            floor(H / 2) x floor(W / 2).

    Returns:
        The pooled maps.
    """
    if ceil_mode:
        pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
        padding: Any = ((0, pad_h), (0, pad_w))
    else:
        padding = 'VALID'
    return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding=padding)


class VGG16(nn.Module):
    """VGG16 reduced-fc backbone of yx DSFD, returning (of1, of2, of3, of4).

    Attributes:
        width: channel multiplier (1.0 = the original network).
        dtype: compute dtype; parameters are float32.
    """

    width: float = 1.0
    dtype: Any = jnp.float32

    def _conv(self, name: str, features: int, kernel: int = 3, dilation: int = 1) -> nn.Conv:
        pad = dilation * (kernel // 2)
        return nn.Conv(
            scaled(features, self.width),
            (kernel, kernel),
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=(dilation, dilation),
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Runs the backbone.

        Args:
            x: [B, H, W, 3] float images (mean already subtracted).

        Returns:
            of1 [B, H/4, W/4, 256w], of2 [B, H/8, W/8, 512w], of3 [B, H/16, W/16, 512w] and
            of4 [B, H/32, W/32, 1024w] (sizes rounded as the pools round them).
        """
        x = x.astype(self.dtype)
        outs = []
        for item in _CFG:
            if item == 'pool':
                x = max_pool_2x2(x)
            elif item == 'pool_ceil':
                x = max_pool_2x2(x, ceil_mode=True)
            elif isinstance(item, str):  # 'of1' .. 'of3': a source map.
                outs.append(x)
            else:
                name, features = item
                x = nn.relu(self._conv(name, features)(x))
        x = max_pool_2x2(x)  # pool5
        x = nn.relu(self._conv('conv6', 1024, kernel=3, dilation=3)(x))
        x = nn.relu(self._conv('conv7', 1024, kernel=1)(x))
        of1, of2, of3 = outs
        return of1, of2, of3, x
