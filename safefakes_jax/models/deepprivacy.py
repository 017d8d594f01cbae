"""DeepPrivacy v1 generator and discriminators as Flax Linen modules, and the PyTorch mapping.

Follows hukkelas/DeepPrivacy (`../shared/reference/gan_anonymizers.md` §1):

* `Generator`: the ISVC'19 progressive generator at its final step, DP-v1 commit 3516f6f
  `deep_privacy/models/generator.py` (`Generator.forward`, `extend`), `custom_layers.py`,
  `models/utils.py` (`generate_pose_channel_images`), `models/isvc_large/config.yml`
  (512 channels, pose_size 14); identical in structure to DP-v2's non-progressive copy
  `deep_privacy/modeling/models/generator/deep_privacy_v1.py` (`DeepPrivacyV1`, v2 release
  754ce11). `Generator()` is the 128x128 net with 46,924,931 parameters.
* `Discriminator('v1')`: DP-v1 `deep_privacy/models/discriminator.py` (`Discriminator`),
  45,526,361 parameters. `Discriminator('v2')`: DP-v2
  `deep_privacy/modeling/models/discriminator/original.py` with `configs/defaults.py` and
  `configs/fdf/deep_privacy_v1.py`, 47,149,801 parameters.

Generator (c_r = channels at resolution r: 512 for r <= 32, 256 at 64, 128 at 128, x `width`;
every conv but `to_rgb` is WSConv -> LeakyReLU(0.2) -> PixelNorm):

* encoder: from_rgb 1x1 3 -> c_R; at each r from R down to 4 two 3x3 convs c_r -> c_{r/2},
  c_{r/2} -> c_{r/2} (c_2 = c_4), the output kept as skip_r, then a 2x2 average pool (not at 4);
* decoder at 4: cat(x, pose_4, z) (generator.py:167) -> 1x1 to c_2 -> two 3x3 to c_4;
* decoder at r = 8 .. R: nearest x2 up, cat(x, skip_r, pose_r) (generator.py:174 and :181,
  deep_privacy_v1.py:54) -> 1x1 2c_{r/2}+7 -> c_{r/2} -> 3x3 to c_r -> 3x3 c_r -> c_r;
* to_rgb: WSConv 1x1 c_R -> 3, linear.

Discriminators (WSConv -> LeakyReLU(0.2), no normalisation): from_rgb 1x1 on cat(image,
condition) (v1, 6 channels) or cat(image, condition, mask) (v2, 7 channels); at each r from R to
8, cat(x, pose_r), two 3x3 convs, a 2x2 average pool; at 4, cat(x, pose_4), a 3x3 and a 4x4
'VALID' conv, flatten, a WS linear to 1. v1: channels 720 (r <= 32), 360 (64), 176 (128)
(`int(512 * sqrt 2) // 8 * 8` halved, floored to multiples of 8), convs c+7 -> c -> c_{r/2},
gain sqrt(2). v2: 728, 368, 184 (`ceil(c_r * sqrt 2 / 8) * 8`), convs c+7 -> c+7 -> c_{r/2}
(4x4: c+7 -> c), gain 1 for the convs and the linear (`layers.Linear` scales by 1/sqrt(fan_in)).

Deviations:

* A keypoint with a NaN coordinate is absent (DP would index with NaN cast to an integer).
* No generator mask input (DP-v1 has none; DP-v2 `DeepPrivacyV1` pools it and drops it).
* Only the fully faded-in network (transition value 1.0) exists: the 4 tensors of the
  checkpoint's 68 that the fade-in lerps with (`V1_FADED_OUT_KEYS`, the 64x64 branch) are unused.
* PixelNorm eps is 1e-8 (DP-v1; DP-v2 has 1e-7). WSConv scales the weights, not the input.
* `Discriminator('v2')` omits the unused `output_layer.linear` (729 parameters) that
  `layers.Linear` creates and never calls; torch counts 47,150,530 parameters.
* `width` scales channels, `resolution` (a power of two >= 8) sets the number of levels.

PyTorch names (`torch_key_shapes`): DP-v1 saves `ckpt['running_average_generator'] =
{'transition_step', 'transition_value', 'parameters': state_dict}` (base_model.py:34), with the
names that `Generator.__init__` plus five `extend()` calls give (generator.py:51-121); a
WSConv2d X has `X.conv.weight` [O, I, k, k] and `X.bias` [1, O, 1, 1] (custom_layers.py:16-22).
32 convs, 64 keys: from_rgb_new.0; encoder 128 new_down.0.model.{0,1}.0, 64
core_blocks_down.0.0.model.{0,1}.0, 32/16/8 core_blocks_down.{1,2,3}.1.model.{0,1}.0, 4
core_blocks_down.4.1.{0,1}.0; decoder 4 core_blocks_up.0.0.0.0 + core_blocks_up.0.0.1.model.
{0,1}.0, 8..64 core_blocks_up.{1..4}.0.0 + .1.model.{0,1}.0, 128 new_up.0.0 +
new_up.1.model.{0,1}.0; to_rgb_new. `naming='v2'`: DP-v2 `DeepPrivacyV1` names, which differ
(encoder.from_rgb.conv.0, {en,de}coder.basic_block{level}.layers.{0,3}, decoder.conv1x1.conv.0,
decoder.skip_connection{level}.conv.layers.0, to_rgb; `.weight` OIHW, `.bias` [O]); DP-v2 has no
renaming code, so its released v1 checkpoint must carry these (unverified).
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
    SQRT2,
    WSConv,
    WSLinear,
    avg_pool,
    keypoint_maps,
    leaky_relu,
    pixel_norm,
    upsample_nearest,
)

KEYPOINT_NAMES = tuple(
    'nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder'.split()
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
Z_CHANNELS = 32
Z_SHAPE = (4, 4, Z_CHANNELS)  # NHWC latent per sample (DP: [32, 4, 4]).
NAMINGS = ('v1', 'v2')
# DP-v1 keys of the faded-out branch (transition value 1.0): accepted and ignored.
V1_FADED_OUT_KEYS = frozenset(
    f'{m}.{p}' for m in ('to_rgb_old', 'from_rgb_old.1.0') for p in ('conv.weight', 'bias')
)


def _levels(resolution: int) -> list[int]:
    """[4, 8, ..., resolution]; `resolution` must be a power of two >= 8."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two >= 8, got {resolution}')
    return [4 << i for i in range(int(math.log2(resolution // 4)) + 1)]


def _base(width: float) -> int:
    return max(1, int(512 * width))


def generator_channels(r: int, width: float = 1.0) -> int:
    """Channels c_r of the generator at resolution r (512 for r <= 32, halved above)."""
    return max(1, _base(width) // max(1, r // 32))


def discriminator_channels(r: int, width: float = 1.0, variant: str = 'v1') -> int:
    """Channels of a discriminator block at resolution r (v1: 720/360/176, v2: 728/368/184)."""
    f = max(1, r // 32)
    if variant == 'v1':
        start = max(8, int(_base(width) * SQRT2) // 8 * 8)
        return max(8, start // f // 8 * 8)
    if variant == 'v2':
        return max(8, math.ceil(_base(width) // f * SQRT2 / 8) * 8)
    raise ValueError(f"unknown discriminator variant {variant!r} (expected 'v1' or 'v2')")


def _check(name: str, x: jax.Array, shape: tuple) -> None:
    if x.ndim != len(shape) or any(
        s is not None and d != s for d, s in zip(x.shape, shape, strict=True)
    ):
        want = ', '.join('N' if s is None else str(s) for s in shape)
        raise ValueError(f'{name} must have shape [{want}], got {list(x.shape)}')


class Generator(nn.Module):
    """The DeepPrivacy v1 U-Net generator (see the module docstring).

    Attributes:
        width: channel multiplier (1.0 = the paper's 512-channel net).
        resolution: output side (128; a power of two >= 8 for smaller models).
        z_channels: channels of the 4x4 latent.
        num_keypoints: keypoints per face (7).
        dtype: compute dtype; parameters are float32, the output is float32.
    """

    width: float = 1.0
    resolution: int = 128
    z_channels: int = Z_CHANNELS
    num_keypoints: int = NUM_KEYPOINTS
    dtype: Any = jnp.float32

    def _block(self, x: jax.Array, features: int, k: int, name: str) -> jax.Array:
        return pixel_norm(leaky_relu(WSConv(features, k, dtype=self.dtype, name=name)(x)))

    @nn.compact
    def __call__(self, condition: jax.Array, keypoints: jax.Array, z: jax.Array) -> jax.Array:
        """Generates faces.

        Args:
            condition: [N, R, R, 3] float RGB in [-1, 1], the face box 0 in all channels.
            keypoints: [N, K, 2] (x, y) = (column, row) / R in the crop, NaN where absent, in
                the order of `KEYPOINT_NAMES`.
            z: [N, 4, 4, z_channels] latent (zeros at inference).

        Returns:
            [N, R, R, 3] float32, the raw to_rgb output (no tanh, clamp or compositing).
        """
        res, levels = self.resolution, _levels(self.resolution)
        _check('condition', condition, (None, res, res, 3))
        n = condition.shape[0]
        _check('keypoints', keypoints, (n, self.num_keypoints, 2))
        _check('z', z, (n, 4, 4, self.z_channels))
        ch = functools.partial(generator_channels, width=self.width)
        x = self._block(condition.astype(self.dtype), ch(res), 1, 'from_rgb')
        skips = {}
        for r in reversed(levels):
            x = self._block(x, ch(r // 2), 3, f'enc{r}_0')
            x = self._block(x, ch(r // 2), 3, f'enc{r}_1')
            if r > 4:
                skips[r] = x
                x = avg_pool(x)
        for r in levels:
            pose = keypoint_maps(keypoints, r, self.dtype)
            if r == 4:
                x = jnp.concatenate([x, pose, z.astype(self.dtype)], axis=-1)
            else:
                x = jnp.concatenate([upsample_nearest(x), skips[r], pose], axis=-1)
            x = self._block(x, ch(r // 2), 1, f'dec{r}_1x1')
            x = self._block(x, ch(r), 3, f'dec{r}_0')
            x = self._block(x, ch(r), 3, f'dec{r}_1')
        x = WSConv(3, 1, dtype=self.dtype, name='to_rgb')(x)
        return x.astype(jnp.float32)


class Discriminator(nn.Module):
    """The DeepPrivacy critic: 'v1' (ISVC'19 code) or 'v2' (the refactor, with the mask).

    Attributes:
        variant: 'v1' (input cat(image, condition)) or 'v2' (cat(image, condition, mask)).
        width: channel multiplier (1.0 = the original).
        resolution: input side (128; a power of two >= 8).
        num_keypoints: keypoints per face (7).
        dtype: compute dtype; parameters are float32.
    """

    variant: str = 'v1'
    width: float = 1.0
    resolution: int = 128
    num_keypoints: int = NUM_KEYPOINTS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        image: jax.Array,
        condition: jax.Array,
        keypoints: jax.Array,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Scores (real or generated) faces.

        Args:
            image: [N, R, R, 3] real or generated face in [-1, 1].
            condition: [N, R, R, 3] the generator's condition (box blacked out).
            keypoints: [N, K, 2] as for `Generator`.
            mask: v2 only (required there; ignored by v1): [N, R, R] or [N, R, R, 1], DP-v2's
                convention 1 = known pixel outside the face box, 0 = inside the box
                (`deep_privacy/dataset/fdf.py` `get_mask`).

        Returns:
            [N, 1] float32 critic scores (as DP's `output_layer`).
        """
        res, levels = self.resolution, _levels(self.resolution)
        ch = functools.partial(discriminator_channels, width=self.width, variant=self.variant)
        _check('image', image, (None, res, res, 3))
        n = image.shape[0]
        _check('condition', condition, (n, res, res, 3))
        _check('keypoints', keypoints, (n, self.num_keypoints, 2))
        inputs = [image, condition]
        if self.variant == 'v2':
            if mask is None:
                raise ValueError("Discriminator('v2') needs the mask (1 outside the box)")
            mask = mask[..., None] if mask.ndim == 3 else mask
            _check('mask', mask, (n, res, res, 1))
            inputs.append(mask)
        gain = SQRT2 if self.variant == 'v1' else 1.0
        extra = 0 if self.variant == 'v1' else self.num_keypoints

        def conv(x, features, k, name, padding=None):
            layer = WSConv(features, k, padding, gain=gain, dtype=self.dtype, name=name)
            return leaky_relu(layer(x))

        x = jnp.concatenate([v.astype(self.dtype) for v in inputs], axis=-1)
        x = conv(x, ch(res), 1, 'from_rgb')
        for r in reversed(levels):
            x = jnp.concatenate([x, keypoint_maps(keypoints, r, self.dtype)], axis=-1)
            x = conv(x, ch(r) + extra, 3, f'b{r}_0')
            if r > 4:
                x = avg_pool(conv(x, ch(r // 2), 3, f'b{r}_1'))
            else:
                x = conv(x, ch(4), 4, 'b4_1', padding=0)
        x = WSLinear(1, gain=gain, dtype=self.dtype, name='output')(x.reshape(n, -1))
        return x.astype(jnp.float32)


# ----------------------------------------------------------------------- PyTorch mapping

_NAME = re.compile(r'(enc|dec)(\d+)_(0|1|1x1)$')


def _torch_prefix(name: str, resolution: int, naming: str) -> str:
    """Torch module path of the Flax conv `name` ('enc64_1', 'dec8_1x1', ...)."""
    if name in ('from_rgb', 'to_rgb'):
        v1 = {'from_rgb': 'from_rgb_new.0', 'to_rgb': 'to_rgb_new'}
        v2 = {'from_rgb': 'encoder.from_rgb.conv.0', 'to_rgb': 'to_rgb'}
        return (v1 if naming == 'v1' else v2)[name]
    part, r, j = _NAME.match(name).groups()
    r, steps = int(r), int(math.log2(resolution // 4))
    level = int(math.log2(r // 4))  # 0 at 4x4
    if naming == 'v2':
        if j == '1x1':
            skip = f'decoder.skip_connection{level}.conv.layers.0'
            return skip if r > 4 else 'decoder.conv1x1.conv.0'
        return f'{part}oder.basic_block{level}.layers.{3 * int(j)}'  # encoder / decoder
    if part == 'enc':
        i = steps - level - 1  # Index in core_blocks_down: 0 for resolution / 2.
        if r == resolution:
            return f'new_down.0.model.{j}.0'
        if r == 4:  # The first block; Sequential(AvgPool2d, its model) after two extend()s.
            return (
                f'core_blocks_down.{i}.1.{j}.0' if steps > 1 else f'core_blocks_down.0.model.{j}.0'
            )
        return f'core_blocks_down.{i}.1.model.{j}.0' if i else f'core_blocks_down.0.0.model.{j}.0'
    head = 'new_up' if r == resolution else f'core_blocks_up.{level}' + ('.0' if r == 4 else '')
    return f'{head}.0.0' if j == '1x1' else f'{head}.1.model.{j}.0'


def _leaf_key(prefix: str, leaf: str, naming: str) -> str:
    if leaf == 'kernel':
        return f'{prefix}.conv.weight' if naming == 'v1' else f'{prefix}.weight'
    return f'{prefix}.bias'


def _torch_shape(flax_shape: tuple, naming: str) -> tuple:
    if len(flax_shape) == 4:  # HWIO -> OIHW
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return (1, flax_shape[0], 1, 1) if naming == 'v1' else tuple(flax_shape)


@functools.lru_cache(maxsize=16)
def _key_table(width: float, resolution: int, naming: str) -> dict[str, tuple[tuple, tuple]]:
    """torch key -> (flax param path, torch shape), in the generator's forward order."""
    if naming not in NAMINGS:
        raise ValueError(f'unknown naming {naming!r} (expected one of {NAMINGS})')
    model = Generator(width=width, resolution=resolution)
    args = (
        jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, NUM_KEYPOINTS, 2), jnp.float32),
        jax.ShapeDtypeStruct((1, 4, 4, Z_CHANNELS), jnp.float32),
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)['params']
    table = {}
    for path, s in traverse_util.flatten_dict(shapes).items():
        key = _leaf_key(_torch_prefix(path[0], resolution, naming), path[-1], naming)
        table[key] = (path, _torch_shape(tuple(s.shape), naming))
    return table


def torch_key_shapes(
    width: float = 1.0, resolution: int = 128, naming: str = 'v1'
) -> dict[str, tuple[int, ...]]:
    """Key -> shape table of the PyTorch generator state dict (64 keys at 128x128).

    Args:
        width: channel multiplier of the model.
        resolution: output side of the model.
        naming: 'v1' (DP-v1 progressive names, ISVC'19 checkpoint) or 'v2' (`DeepPrivacyV1`).

    Returns:
        `key: shape`, e.g. `'new_up.0.0.conv.weight': (256, 519, 1, 1)`, in forward order.
    """
    return {k: s for k, (_, s) in _key_table(width, resolution, naming).items()}


def params_from_torch_state_dict(
    state_dict: Mapping[str, Any],
    width: float = 1.0,
    resolution: int = 128,
    naming: str = 'auto',
) -> dict[str, Any]:
    """Maps a DeepPrivacy generator state dict onto the `Generator` Flax params.

    Conv weights go OIHW -> HWIO (unscaled, as stored), biases are flattened. With DP-v1
    names, the faded-out branch (`V1_FADED_OUT_KEYS`) is accepted and ignored.

    Args:
        state_dict: key -> array (e.g. `ckpt['running_average_generator']['parameters']`,
            see `state_dict_from_checkpoint`).
        width: channel multiplier of the target model.
        resolution: output side of the target model.
        naming: 'v1', 'v2' or 'auto' ('v2' when a key starts with 'encoder.' / 'decoder.').

    Returns:
        The nested float32 numpy `params` (`Generator().apply({'params': params}, ...)`).

    Raises:
        ValueError: naming the missing or unexpected keys and the shape mismatches.
    """
    if naming == 'auto':
        v2 = any(k.startswith(('encoder.', 'decoder.')) for k in state_dict)
        naming = 'v2' if v2 else 'v1'
    table = _key_table(width, resolution, naming)
    ignored = V1_FADED_OUT_KEYS if naming == 'v1' else frozenset()
    missing = [k for k in table if k not in state_dict]
    unexpected = sorted(k for k in state_dict if k not in table and k not in ignored)
    mismatched, flat = [], {}
    for key, (path, shape) in table.items():
        if key not in state_dict:
            continue
        value = np.asarray(state_dict[key], dtype=np.float32)
        if value.shape != shape:
            mismatched.append(f'{key}: {value.shape} != expected {shape}')
            continue
        flat[path] = np.transpose(value, (2, 3, 1, 0)) if path[-1] == 'kernel' else value.ravel()
    problems = [
        f'{what} ({len(keys)}): {_first(keys)}'
        for what, keys in (
            ('missing keys', missing),
            ('unexpected keys', unexpected),
            ('shape mismatches', mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f'state dict ({naming} names) does not fit DeepPrivacy Generator(width={width}, '
            f'resolution={resolution}): ' + '; '.join(problems)
        )
    return traverse_util.unflatten_dict(flat)


def params_to_torch_state_dict(params: Mapping[str, Any], naming: str = 'v1') -> dict[str, Any]:
    """Inverse of `params_from_torch_state_dict`: Flax params -> PyTorch state dict.

    Args:
        params: the `Generator` params (without the outer `{'params': ...}`).
        naming: 'v1' or 'v2' key names.

    Returns:
        key -> float32 numpy array (weights OIHW; v1 biases [1, O, 1, 1]), forward order.
    """
    if naming not in NAMINGS:
        raise ValueError(f'unknown naming {naming!r} (expected one of {NAMINGS})')
    flat = traverse_util.flatten_dict(dict(params))
    resolution = max(int(m.group(2)) for p in flat if (m := _NAME.match(p[0])))
    out = {}
    for path, value in flat.items():
        value = np.asarray(value, dtype=np.float32)
        key = _leaf_key(_torch_prefix(path[0], resolution, naming), path[-1], naming)
        if value.ndim == 4:
            out[key] = np.transpose(value, (3, 2, 0, 1))
        else:
            out[key] = value.reshape(_torch_shape(value.shape, naming))
    return out


def state_dict_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The EMA generator's state dict (numpy) from a loaded DeepPrivacy checkpoint.

    Args:
        checkpoint: the `torch.load` result (with 'running_average_generator'), that entry
            itself, or a DP-v1 `{'transition_step', 'transition_value', 'parameters'}` dict.

    Returns:
        key -> numpy array, for `params_from_torch_state_dict`.

    Raises:
        ValueError: a DP-v1 generator saved mid fade-in (transition value != 1), which this
            fully faded-in `Generator` cannot reproduce.
    """
    g = checkpoint.get('running_average_generator', checkpoint)
    if isinstance(g.get('parameters'), Mapping):
        if float(g.get('transition_value', 1.0)) != 1.0:
            raise ValueError(
                f'generator saved mid fade-in (transition_value={g["transition_value"]}); '
                'only a fully faded-in network (1.0) is supported'
            )
        g = g['parameters']
    to_np = lambda v: v.detach().cpu().numpy() if hasattr(v, 'detach') else np.asarray(v)
    return {k: to_np(v) for k, v in g.items()}


def _first(items: list[str], n: int = 8) -> str:
    shown = ', '.join(items[:n])
    return shown + (f', ... (+{len(items) - n})' if len(items) > n else '')
