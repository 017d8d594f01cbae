"""Layers shared by the GAN generators and discriminators (NHWC everywhere).

Progressive-GAN style layers as DeepPrivacy uses them (`../shared/reference/gan_anonymizers.md`
§1; DP-v1 `deep_privacy/models/custom_layers.py` at commit 3516f6f):

* `WSConv` / `WSLinear`: equalized learning rate. The stored weights are unscaled, N(0, 1) at
  init, bias 0, and the layer computes `conv(x, W * gain / sqrt(fan_in)) + b` with
  `fan_in = in_channels * kh * kw` and `gain = sqrt(2)`. DP-v1 scales the input instead
  (`conv(x * scale)`); that is the same function (equal up to float rounding).
* `pixel_norm`: x / sqrt(mean over channels of x² + eps), computed in float32.
* `keypoint_maps`: the one-hot keypoint maps of DP `generate_pose_channel_images`.
* `upsample_nearest` (x2) and `avg_pool` (2x2, stride 2).

CIAGAN's layers (`dvl-tum/ciagan` `source/arch/arch_unet_flex.py`, reference §2):

* `SNConv`: `ConvLayer`, a reflection pad then a convolution under PyTorch's
  `nn.utils.spectral_norm`, with PyTorch's semantics: the state holds `u` [O] and `v`
  [I * kh * kw] (in the order of `weight.reshape(O, -1)` of the OIHW weight) in `batch_stats`;
  training runs one power iteration (`v = normalize(W^T u)`, `u = normalize(W v)`, eps 1e-12,
  no gradient through them) and stores them; evaluation uses the stored `u` and `v` as they
  are; both divide the kernel by `sigma = u . (W v)`. `flax.linen.SpectralNorm` is not used:
  it runs a power iteration on every call, evaluation included, and keeps no `v`, so it cannot
  reproduce a PyTorch checkpoint's outputs.
* `instance_norm`: `nn.InstanceNorm2d(affine=True)`: per sample and channel over H and W,
  biased variance, eps 1e-5, the same in training and evaluation.

Modules have a compute `dtype` (e.g. bfloat16); parameters are always float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SQRT2 = math.sqrt(2.0)
LEAKY_SLOPE = 0.2


class WSConv(nn.Module):
    """2-D convolution with an equalized learning rate (DP-v1 `WSConv2d`), stride 1.

    Attributes:
        features: output channels.
        kernel_size: square kernel side (1, 3 or 4 in DeepPrivacy).
        padding: zero padding on every side; None = `(kernel_size - 1) // 2` (1 for 3x3,
            0 for 1x1). The discriminator's 4x4 conv passes 0 ('VALID').
        gain: the scale's numerator (sqrt(2) in DP-v1; DP-v2's discriminator uses 1).
        dtype: compute dtype; parameters are float32.
        precision: `lax` precision of the convolution (None = the backend default).
    """

    features: int
    kernel_size: int = 3
    padding: int | None = None
    gain: float = SQRT2
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves [N, H, W, I] maps; returns [N, H', W', features] in `dtype`."""
        k = self.kernel_size
        in_ch = x.shape[-1]
        kernel = self.param(
            'kernel', nn.initializers.normal(1.0), (k, k, in_ch, self.features), jnp.float32
        )
        bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
        scale = self.gain / math.sqrt(in_ch * k * k)
        pad = (k - 1) // 2 if self.padding is None else self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            (kernel * scale).astype(self.dtype),
            window_strides=(1, 1),
            padding=((pad, pad), (pad, pad)),
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            precision=self.precision,
        )
        return y + bias.astype(self.dtype)


class WSLinear(nn.Module):
    """Dense layer with an equalized learning rate (DP-v1 `WSLinear`).

    Computes `x @ (W * gain / sqrt(in_features)) + b`, W stored unscaled ([in, out], N(0, 1)).

    Attributes:
        features: output features.
        gain: the scale's numerator (sqrt(2) in DP-v1, 1 in DP-v2 `layers.Linear`).
        dtype: compute dtype; parameters are float32.
        precision: `lax` precision of the matmul.
    """

    features: int
    gain: float = SQRT2
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [..., I] to [..., features] in `dtype`."""
        in_f = x.shape[-1]
        kernel = self.param(
            'kernel', nn.initializers.normal(1.0), (in_f, self.features), jnp.float32
        )
        bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
        scale = self.gain / math.sqrt(in_f)
        w = (kernel * scale).astype(self.dtype)
        y = jnp.matmul(x.astype(self.dtype), w, precision=self.precision)
        return y + bias.astype(self.dtype)


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with DeepPrivacy's negative slope 0.2."""
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """x / sqrt(mean over the channel axis of x² + eps), in float32, returned in x's dtype.

    Args:
        x: [..., C] maps.
        eps: DP-v1 uses 1e-8 (DP-v2 1e-7).
    """
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (x32 / norm).astype(x.dtype)


def upsample_nearest(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling of [N, H, W, C] (`F.interpolate(scale_factor=2)`)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2 of [N, H, W, C] (H and W even)."""
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f'avg_pool needs even spatial sizes, got {h}x{w}')
    pooled = x.astype(jnp.float32).reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return pooled.astype(x.dtype)


def keypoint_maps(keypoints: jax.Array, r: int, dtype: Any = jnp.float32) -> jax.Array:
    """One-hot keypoint maps at resolution `r` (DP `generate_pose_channel_images`).

    Keypoint k of sample n with normalised (x, y) = (column / size, row / size) sets
    `P[n, floor(y * r), floor(x * r), k] = 1` when 0 <= x < 1 and 0 <= y < 1. A point with a
    coordinate that is NaN, negative or >= 1 (exactly 1.0 included) sets nothing; DP drops
    points outside [0, 1) the same way (its NaN handling is undefined; here NaN = absent).

    Args:
        keypoints: [N, K, 2] float (x, y) in [0, 1) of the crop, NaN where absent.
        r: map side in pixels.
        dtype: dtype of the maps.

    Returns:
        [N, r, r, K] maps of 0 and 1 in `dtype`.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f'keypoints must be [N, K, 2] (x, y), got {keypoints.shape}')
    kp = keypoints.astype(jnp.float32)
    x, y = kp[..., 0], kp[..., 1]
    valid = (x >= 0) & (x < 1) & (y >= 0) & (y < 1)  # False for NaN.
    # x * r is exact in float32 for a power-of-two r, so x < 1 gives a column < r.
    col = jnp.floor(jnp.where(valid, x, 0.0) * r).astype(jnp.int32)
    row = jnp.floor(jnp.where(valid, y, 0.0) * r).astype(jnp.int32)
    cells = jnp.arange(r, dtype=jnp.int32)
    one_col = (col[..., None] == cells) & valid[..., None]  # [N, K, r]
    one_row = row[..., None] == cells
    maps = one_row[:, :, :, None] & one_col[:, :, None, :]  # [N, K, r(row), r(col)]
    return jnp.transpose(maps, (0, 2, 3, 1)).astype(dtype)


def box_mask(boxes: jax.Array, size: int) -> jax.Array:
    """float32 [B, size, size, 1]: 1 inside `x1 <= col < x2`, `y1 <= row < y2` of each box
    (int [B, 4] `x1 y1 x2 y2`, pixels), 0 elsewhere."""
    idx = jnp.arange(size)
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    cols = (idx[None] >= x1) & (idx[None] < x2)
    rows = (idx[None] >= y1) & (idx[None] < y2)
    return (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)[..., None]


def masked_condition(images: jax.Array, boxes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The inpainting inputs of uint8 crops [B, R, R, 3] and their boxes [B, 4] (`x1 y1 x2 y2`).

    Returns:
      (real in [-1, 1], mask = 1 inside the box, condition = real with the box set to 0 in
      every channel: DeepPrivacy's mid-grey `cut_bounding_box`).
    """
    real = images.astype(jnp.float32) / 127.5 - 1.0
    mask = box_mask(boxes, real.shape[1])
    return real, mask, real * (1.0 - mask)


def torch_default_init(scale: float = 1.0 / 3.0) -> Any:
    """PyTorch's default conv / linear kernel init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (`kaiming_uniform_(a=sqrt(5))`), as a Flax initializer."""
    return nn.initializers.variance_scaling(scale, 'fan_in', 'uniform')


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x), eps)  # torch.nn.functional.normalize.


class SNConv(nn.Module):
    """CIAGAN's `ConvLayer`: reflection pad, then a spectral-normalised convolution (module
    docstring), stride 1.

    Attributes:
        features: output channels.
        kernel_size: square kernel side; the pad is `kernel_size // 2` on every side.
        kernel_init: init of the (unnormalised) kernel, HWIO.
        bias_init: init of the bias.
        dtype: compute dtype; parameters and the spectral-norm state are float32.
    """

    features: int
    kernel_size: int = 3
    kernel_init: Any = nn.initializers.glorot_normal()
    bias_init: Any = nn.initializers.constant(0.01)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
        """Convolves [N, H, W, I]; `update_stats` runs and stores the power iteration."""
        k, in_ch, out = self.kernel_size, x.shape[-1], self.features
        kernel = self.param('kernel', self.kernel_init, (k, k, in_ch, out), jnp.float32)
        bias = self.param('bias', self.bias_init, (out,), jnp.float32)

        def unit(shape):  # PyTorch: normalize(randn), drawn once at init.
            return lambda: _l2_normalize(jax.random.normal(self.make_rng('params'), shape))

        u = self.variable('batch_stats', 'u', unit((out,)))
        v = self.variable('batch_stats', 'v', unit((in_ch * k * k,)))
        w = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(out, -1)  # PyTorch's weight_mat.
        u_vec, v_vec = u.value, v.value
        if update_stats and not self.is_initializing():
            w_sg = jax.lax.stop_gradient(w)
            v_vec = _l2_normalize(w_sg.T @ u_vec)
            u_vec = _l2_normalize(w_sg @ v_vec)
            u.value, v.value = u_vec, v_vec
        sigma = jnp.dot(u_vec, w @ v_vec)
        pad = k // 2
        if pad:
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            (kernel / sigma).astype(self.dtype),
            window_strides=(1, 1),
            padding='VALID',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        )
        return y + bias.astype(self.dtype)


def instance_norm(name: str, dtype: Any = jnp.float32) -> nn.Module:
    """`nn.InstanceNorm2d(c, affine=True)`: params `scale` (PyTorch `weight`) and `bias`."""
    return nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, name=name)
