"""CIAGAN's identity network: a ResNet-18-like Siamese embedding, and its contrastive loss.

Follows `dvl-tum/ciagan` `source/arch/arch_resnet_siam.py` (`ResNet`, `BasicBlock`) and
`source/util_loss.py` (`ContrastiveLoss`); reference §2. `SiameseResNet()` has 12,924,144
parameters (1,200 outputs):

* stem: 3x3 conv stride 1, no bias, BatchNorm, relu (the CIFAR variant: no 7x7, no max pool);
* `layer1..layer4`: two BasicBlocks each (3x3-BN-relu-3x3-BN plus the shortcut, a 1x1 stride-2
  conv + BN where the shape changes, then relu), 64, 128, 256, 512 channels, strides 1, 2, 2, 2
  (the original lists five block counts and uses four);
* global average pool, `linear1` 512 -> 1024, relu, `linear2` 1024 -> `num_classes`: the
  output is used as the embedding (never as class scores).

BatchNorm: PyTorch's momentum 0.1 (Flax 0.9), eps 1e-5; batch statistics in training, the
running ones in evaluation, kept in `batch_stats`. Inputs are images in [0, 1], as CIAGAN feeds
them. Convolutions pad explicitly (1 on every side) so stride 2 samples as PyTorch does.

`contrastive_loss(a, b, same, margin=3)`: mean over the batch of
`0.5 * (same * d^2 + (1 - same) * relu(margin - sqrt(d^2 + 1e-9))^2)`, d^2 the squared
Euclidean distance of the embeddings.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from safefakes_jax.models.gan_layers import torch_default_init

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
HIDDEN = 1024


def _conv(features: int, k: int, stride: int, name: str, dtype: Any) -> nn.Conv:
    pad = k // 2
    return nn.Conv(
        features,
        (k, k),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=torch_default_init(),
        dtype=dtype,
        name=name,
    )


def _bn(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


class BasicBlock(nn.Module):
    """ResNet's BasicBlock with PyTorch's shortcut rule (a 1x1 conv where the shape changes)."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        f, s, dt = self.features, self.stride, self.dtype
        out = nn.relu(_bn(train, 'bn1', dt)(_conv(f, 3, s, 'conv1', dt)(x)))
        out = _bn(train, 'bn2', dt)(_conv(f, 3, 1, 'conv2', dt)(out))
        if s != 1 or x.shape[-1] != f:
            x = _bn(train, 'shortcut_1', dt)(_conv(f, 1, s, 'shortcut_0', dt)(x))
        return nn.relu(out + x)


class SiameseResNet(nn.Module):
    """The identity embedding (module docstring).

    Attributes:
        num_classes: the embedding size (CIAGAN: the number of identities, 1,200).
        width: channel multiplier (1.0 = the paper's network).
        dtype: compute dtype; parameters are float32.
    """

    num_classes: int = 1200
    width: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Embeds float images [N, H, W, 3] in [0, 1]; returns float32 [N, num_classes]."""
        dt = self.dtype

        def ch(c: int) -> int:
            return max(1, round(c * self.width))

        x = nn.relu(_bn(train, 'bn1', dt)(_conv(ch(64), 3, 1, 'conv1', dt)(images)))
        for i, (features, stride) in enumerate(STAGES, start=1):
            for b in range(2):
                block = BasicBlock(ch(features), stride if b == 0 else 1, dt, name=f'layer{i}_{b}')
                x = block(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        dense = dict(kernel_init=torch_default_init(), dtype=dt)
        x = nn.relu(nn.Dense(ch(HIDDEN), name='linear1', **dense)(x))
        return nn.Dense(self.num_classes, name='linear2', **dense)(x).astype(jnp.float32)


def contrastive_loss(a: jax.Array, b: jax.Array, same: jax.Array, margin: float = 3.0) -> jax.Array:
    """CIAGAN's `ContrastiveLoss` (module docstring); `same` is 1 for a same-identity pair."""
    d2 = jnp.sum(jnp.square(b.astype(jnp.float32) - a.astype(jnp.float32)), axis=-1)
    same = same.astype(jnp.float32)
    apart = jnp.square(jax.nn.relu(margin - jnp.sqrt(d2 + 1e-9)))
    return jnp.mean(0.5 * (same * d2 + (1.0 - same) * apart))
