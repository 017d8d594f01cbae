"""Image metrics (`evaluation/image_metrics.py`): L1 / L2 / PSNR by hand, SSIM against skimage,
the Frechet distance against scipy's sqrtm formula (near-singular covariances included)."""

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import skimage.metrics
import skimage.transform

from safefakes_jax.evaluation import image_metrics as M


def _pairs():
    rng = np.random.default_rng(0)
    noise = rng.random((2, 32, 40, 3), np.float32), rng.random((2, 32, 40, 3), np.float32)
    face = skimage.transform.resize(skimage.data.astronaut()[0:200, 150:350], (64, 64))
    face = face.astype(np.float32)[None]
    structured = (
        np.concatenate([face, face]),
        np.concatenate(
            [np.clip(face + 0.1 * rng.standard_normal(face.shape), 0, 1), face[:, ::-1]]
        ).astype(np.float32),
    )
    return [noise, structured]


def test_l1_l2_psnr_by_hand():
    a = np.zeros((2, 4, 4, 3), np.float32)
    b = a.copy()
    b[0, :2] = 0.5  # Half the pixels off by 0.5.
    b[1] = 0.2
    np.testing.assert_allclose(M.l1(a, b), [0.25, 0.2], rtol=1e-6)
    # L2 is the per-image RMSE (DeepPrivacy's "L2"), not the MSE.
    np.testing.assert_allclose(M.l2(a, b), [np.sqrt(0.125), 0.2], rtol=1e-6)
    np.testing.assert_allclose(M.psnr(a, b), [-10 * np.log10(0.125), -10 * np.log10(0.04)], 1e-5)
    assert np.isinf(M.psnr(a, a)).all()
    with pytest.raises(ValueError, match='one shape'):
        M.l1(a, b[:, :3])


@pytest.mark.parametrize('pair', _pairs(), ids=['noise', 'structured'])
def test_ssim_equals_skimage_with_wang_settings(pair):
    a, b = pair
    want = [
        skimage.metrics.structural_similarity(
            x,
            y,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1,
            data_range=1,
        )
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(M.ssim(a, b), want, atol=1e-4)
    np.testing.assert_allclose(M.ssim(a, a), 1.0, atol=1e-5)


def _scipy_frechet(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance (eps 1e-6 only when the result is not finite)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)


@pytest.mark.parametrize('n, d', [(600, 32), (3000, 64), (20, 64)], ids=['full', 'big', 'n<d'])
def test_frechet_distance_equals_scipy(n, d):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3
    b = rng.standard_normal((n, d)) + 0.2
    stats = (*M.feature_statistics(a), *M.feature_statistics(b))
    got = M.frechet_distance(*stats)
    assert isinstance(got, float)
    # n < d: rank-deficient covariances, where sqrtm is near-singular.
    np.testing.assert_allclose(got, _scipy_frechet(*stats), rtol=1e-6)
    mu, sigma = stats[:2]
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_frechet_distance_rejects_bad_statistics():
    with pytest.raises(ValueError, match='one D'):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='NaN'):
        M.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))
