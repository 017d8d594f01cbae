"""Sun2018 networks (`models/sun2018.py`), its train step (`train/sun2018_step.py`) and the
68-landmark option of the face-crop pipeline: paper-size parameter counts, layers against
numpy, the landmark maps and the black-out input, the mirror of the landmarks, the step."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sun2018_pipa
from safefakes_jax import sharding
from safefakes_jax.data import face_crop_pipeline, face_crops
from safefakes_jax.models import gan_layers, sun2018
from safefakes_jax.train import state as state_lib
from safefakes_jax.train import sun2018_step, sun2018_trainer

# Paper size (width 1, 128 x 128): pix2pix's unet_256 less one level on 3 + 68 input channels,
# and the 70 x 70 PatchGAN on image + black-out input + 68 landmark maps (74 channels).
PAPER_GENERATOR_PARAMS = 41_899_203
PAPER_DISCRIMINATOR_PARAMS = 2_838_337
PAPER_DISCRIMINATOR_NO_LANDMARKS_PARAMS = 2_768_705  # 6 input channels: pix2pix's own count.


def _abstract(module, *shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.eval_shape(module.init, jax.random.key(0), *args)


def test_paper_size_parameter_counts_and_shapes():
    g, d = sun2018_trainer.build_models(sun2018_pipa.get_config())
    img, lms = (1, 128, 128, 3), (1, 68, 2)
    g_vars = _abstract(g, img, lms)
    d_vars = _abstract(d, img, img, lms)
    assert list(g_vars) == ['params']  # InstanceNorm: no batch_stats.
    assert state_lib.num_params(g_vars['params']) == PAPER_GENERATOR_PARAMS
    assert state_lib.num_params(d_vars['params']) == PAPER_DISCRIMINATOR_PARAMS
    plain = sun2018.Discriminator(use_landmarks=False)
    no_lm = _abstract(plain, img, img, lms)['params']
    assert state_lib.num_params(no_lm) == PAPER_DISCRIMINATOR_NO_LANDMARKS_PARAMS
    p = g_vars['params']
    assert len([k for k in p if k.startswith('down') and 'norm' not in k]) == 7  # To 1 x 1.
    assert p['down0']['kernel'].shape == (4, 4, 71, 64)
    assert p['down6']['kernel'].shape == (4, 4, 512, 512) and 'down6_norm' not in p
    assert p['up5']['kernel'].shape == (4, 4, 1024, 512)  # cat(decoder, skip).
    assert p['up0']['kernel'].shape == (4, 4, 128, 3) and 'bias' in p['up0']
    assert 'bias' not in p['down1'] and 'bias' in p['down0']  # No bias before a norm.
    x = jax.ShapeDtypeStruct(img, jnp.float32)
    lm = jax.ShapeDtypeStruct(lms, jnp.float32)
    assert jax.eval_shape(g.apply, g_vars, x, lm).shape == img
    assert jax.eval_shape(d.apply, d_vars, x, x, lm).shape == (1, 14, 14, 1)
    with pytest.raises(ValueError, match='power of two'):
        sun2018.depth(48)
    with pytest.raises(ValueError, match='PatchGAN needs'):
        _abstract(sun2018.Discriminator(resolution=16), (1, 16, 16, 3), (1, 16, 16, 3), lms)


def _np_conv(x, w, stride, pad):
    """Cross-correlation of [H, W, I] with [k, k, I, O] (PyTorch's Conv2d)."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    k = w.shape[0]
    h = (x.shape[0] - k) // stride + 1
    out = np.zeros((h, h, w.shape[3]))
    for i in range(h):
        for j in range(h):
            patch = x[i * stride : i * stride + k, j * stride : j * stride + k]
            out[i, j] = np.einsum('abi,abio->o', patch, w)
    return out


def _np_conv_transpose(x, w):
    """PyTorch's ConvTranspose2d(k=4, stride=2, padding=1) of [H, W, I] with the flipped
    [4, 4, I, O] kernel: each input pixel scatters its kernel into the output."""
    h = x.shape[0]
    full = np.zeros((2 * h + 2, 2 * h + 2, w.shape[3]))
    wf = w[::-1, ::-1]
    for i in range(h):
        for j in range(h):
            full[2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum('i,abio->abo', x[i, j], wf)
    return full[1:-1, 1:-1]


def test_layers_against_numpy():
    """The first encoder conv, an InstanceNorm and the output layer (ReLU, transposed conv,
    tanh) of a small generator against direct numpy computations."""
    g = sun2018.Generator(width=0.0625, resolution=16)
    rng = np.random.default_rng(0)
    cond = rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    lms = rng.uniform(0, 1, (1, 68, 2)).astype(np.float32)
    variables = g.init(jax.random.key(0), cond, lms)
    out, inter = g.apply(variables, cond, lms, capture_intermediates=True)
    inter = jax.tree.map(np.asarray, inter['intermediates'])
    p = jax.tree.map(np.asarray, variables['params'])
    x = np.concatenate([cond[0], np.asarray(gan_layers.keypoint_maps(lms, 16))[0]], -1)
    down0 = _np_conv(x, p['down0']['kernel'], 2, 1) + p['down0']['bias']
    np.testing.assert_allclose(inter['down0']['__call__'][0][0], down0, atol=1e-5)
    d1 = inter['down1']['__call__'][0][0]
    normed = (d1 - d1.mean((0, 1))) / np.sqrt(d1.var((0, 1)) + 1e-5)
    np.testing.assert_allclose(inter['down1_norm']['__call__'][0][0], normed, atol=1e-4)
    up_in = np.concatenate([inter['up1_norm']['__call__'][0][0], down0], -1)
    want = np.tanh(_np_conv_transpose(np.maximum(up_in, 0), p['up0']['kernel']) + p['up0']['bias'])
    np.testing.assert_allclose(np.asarray(out)[0], want, atol=1e-5)


def test_landmark_maps_and_the_blackout_input():
    lms = np.full((1, 68, 2), np.nan, np.float32)
    lms[0, 30] = (0.5, 0.25)  # Nose tip: column 8, row 4 at 16.
    lms[0, 0] = (1.0, 0.5)  # Exactly 1: outside, dropped.
    maps = np.asarray(gan_layers.keypoint_maps(jnp.asarray(lms), 16))
    assert maps.shape == (1, 16, 16, 68) and maps.sum() == 1 and maps[0, 4, 8, 30] == 1
    assert np.asarray(gan_layers.keypoint_maps(jnp.full((1, 68, 2), jnp.nan), 16)).sum() == 0
    images = np.full((1, 8, 8, 3), 255, np.uint8)
    real, mask, cond = sun2018.blackout_condition(jnp.asarray(images), jnp.array([[2, 1, 5, 4]]))
    inside = np.asarray(mask[0, ..., 0]) > 0
    assert inside.sum() == 9 and inside[1:4, 2:5].all()
    assert (np.asarray(cond)[0][inside] == -1).all() and (np.asarray(cond)[0][~inside] == 1).all()
    # The generator reads the maps: landmarks change its output; none is the empty maps.
    g = sun2018.Generator(width=0.0625, resolution=16)
    c = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
    v = g.init(jax.random.key(0), c, jnp.asarray(lms))
    none = g.apply(v, c, jnp.full((1, 68, 2), jnp.nan))
    assert np.isfinite(np.asarray(none)).all() and np.abs(np.asarray(none)).max() <= 1
    assert not np.allclose(g.apply(v, c, jnp.asarray(lms)), none)
    # Dropout only in training (none below 64 px; at 64 one block has it).
    g64 = sun2018.Generator(width=0.0625, resolution=64)
    c64 = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)
    l64 = jnp.full((1, 68, 2), jnp.nan)
    v64 = g64.init(jax.random.key(0), c64, l64)
    a = g64.apply(v64, c64, l64, True, rngs={'dropout': jax.random.key(1)})
    b = g64.apply(v64, c64, l64, True, rngs={'dropout': jax.random.key(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(g64.apply(v64, c64, l64), g64.apply(v64, c64, l64))


def test_landmark_mirror_and_the_pipeline_option():
    perm = np.array(face_crop_pipeline.LANDMARKS68_MIRROR)
    assert sorted(perm) == list(range(68)) and (perm[perm] == np.arange(68)).all()
    assert perm[0] == 16 and perm[36] == 45 and perm[48] == 54 and perm[30] == 30
    # A mirror-symmetric face is its own flip.
    rng = np.random.default_rng(0)
    face = np.zeros((68, 2))
    for i in range(68):
        j = perm[i]
        if i == j:
            face[i] = (0.5, rng.uniform())
        elif i < j:
            face[i] = (rng.uniform(0, 0.5), rng.uniform())
            face[j] = (1.0 - face[i, 0], face[i, 1])
    np.testing.assert_allclose(face_crop_pipeline.flip_landmarks68(face), face, atol=1e-12)

    n, s = 3, 32
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, s - 1, (n, 68, 2)).astype(np.float32)
    lm[2] = np.nan  # A face without landmarks.
    crops = face_crops.FaceCrops(
        images=rng.integers(0, 256, (n, s, s, 3), np.uint8),
        boxes=np.tile(np.array([8, 8, 24, 24], np.float32), (n, 1)),
        keypoints7=np.zeros((n, 7, 3), np.float32),
        landmarks68=lm,
        identity=np.zeros(n, np.int32),
        source_image=np.array(['a.jpg'] * n),
        face_index=np.arange(n, dtype=np.int32),
        crop_boxes=np.zeros((n, 4), np.int32),
    )
    kw = dict(batch_size=4, resolution=16, seed=0, train=False)
    plain = next(
        face_crop_pipeline.as_numpy_batches(face_crop_pipeline.make_gan_dataset(crops, **kw))
    )
    assert 'landmarks68' not in plain  # Off by default: DeepPrivacy's batches are unchanged.
    ds = face_crop_pipeline.make_gan_dataset(crops, landmarks68=True, **kw)
    batch = next(face_crop_pipeline.as_numpy_batches(ds))
    np.testing.assert_allclose(batch['landmarks68'][:2], (lm[:2] + 0.5) / s, rtol=1e-6)
    assert np.isnan(batch['landmarks68'][2:]).all()  # Absent, and the padding row.
    for key in plain:
        np.testing.assert_array_equal(batch[key], plain[key])
    # Training flips mirror the landmarks with the image.
    train = face_crop_pipeline.make_gan_dataset(
        crops, batch_size=8, resolution=16, seed=0, train=True, box_jitter=0, landmarks68=True
    )
    tb = next(face_crop_pipeline.as_numpy_batches(train))
    flips = set()
    for i in range(8):
        row = tb['index'][i]
        small = cv2.resize(crops.images[row], (16, 16), interpolation=cv2.INTER_AREA)
        flipped = not np.array_equal(tb['image'][i], small)
        if flipped:
            np.testing.assert_array_equal(tb['image'][i], small[:, ::-1])
        raw = (lm[row] + 0.5) / s
        want = face_crop_pipeline.flip_landmarks68(raw) if flipped else raw
        np.testing.assert_allclose(tb['landmarks68'][i], want, rtol=1e-6)
        flips.add(flipped)
    assert flips == {True, False}


def _state_and_step(config, mesh, **step_kw):
    g, d = sun2018_trainer.build_models(config)
    state = state_lib.create(sun2018_trainer.specs(config, g, d), jax.random.key(0), mesh)
    return state, sun2018_step.make_train_step(g, d, mesh, **step_kw)


@pytest.mark.parametrize('gan_loss', ['vanilla', 'lsgan'])
def test_step_losses_are_finite_and_params_change(gan_loss):
    config = sun2018_pipa.get_config('tiny')
    mesh = sharding.make_mesh(None)
    state, step = _state_and_step(config, mesh, gan_loss=gan_loss, l1_region='weighted')
    before = jax.tree.map(np.asarray, state.nets['generator'].params)
    d_before = jax.tree.map(np.asarray, state.nets['discriminator'].params)
    r, n = config.model.resolution, 8
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch(
        {
            'image': rng.integers(0, 256, (n, r, r, 3), np.uint8),
            'box': np.tile(np.array([8, 8, 24, 24], np.int32), (n, 1)),
            'landmarks68': rng.uniform(0, 1, (n, 68, 2)).astype(np.float32),
        },
        mesh,
        sun2018_trainer.BATCH_KEYS,
    )
    state, m = step(state, batch, jax.random.key(1))
    m = jax.device_get(m)
    keys = ('d_loss', 'g_loss', 'g_adv', 'g_l1', 'd_real', 'd_fake', 'g_grad_norm', 'd_grad_norm')
    assert all(np.isfinite(m[k]) for k in keys)
    np.testing.assert_allclose(m['g_loss'], m['g_adv'] + 100.0 * m['g_l1'], rtol=1e-5)
    if gan_loss == 'vanilla':  # Logits near 0 at init: BCE ~ log 2.
        assert abs(m['d_loss'] - np.log(2)) < 0.2
    after = state.nets['generator'].params
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, jax.device_get(after))
    assert all(jax.tree.leaves(changed))
    d_after = jax.device_get(state.nets['discriminator'].params)
    assert not np.allclose(d_before['logits']['kernel'], d_after['logits']['kernel'])
    assert int(state.step) == 1


def test_l1_regions_and_bad_options():
    mask = jnp.zeros((1, 2, 2, 1)).at[0, 0, 0, 0].set(1.0)
    fake, real = jnp.zeros((1, 2, 2, 3)), jnp.ones((1, 2, 2, 3)).at[0, 0, 0].set(3.0)
    # |d| = 3 in the box pixel, 1 elsewhere.
    l1 = lambda region: float(
        sun2018_step.weighted_l1(fake, real, sun2018_step.l1_weights(mask, region))
    )
    assert l1('crop') == pytest.approx(6 / 4)
    assert l1('box') == pytest.approx(3.0)
    assert l1('weighted') == pytest.approx((2 * 3 + 3 * 1) / 5)
    g, d = sun2018.Generator(), sun2018.Discriminator()
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match='gan_loss'):
        sun2018_step.make_train_step(g, d, mesh, gan_loss='wgan')
    with pytest.raises(ValueError, match='l1_region'):
        sun2018_step.make_train_step(g, d, mesh, l1_region='face')
