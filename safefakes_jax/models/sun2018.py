"""Sun2018's head-inpainting stage (stage 2) as Flax Linen modules: a U-Net generator, a PatchGAN.

Sun et al., "Natural and Effective Obfuscation by Head Inpainting" (CVPR'18, arXiv 1711.09001)
has no public code; this is the reimplementation the Safe Fakes paper describes (Sec. IV-A,
`../shared/reference/gan_anonymizers.md` §3 and §4 decision 17): 128 x 128 faces, black-out
input, the 68 dlib landmarks of the ORIGINAL face, a U-Net generator with skips, a conditional
discriminator, adversarial + L1 loss (the loss is in `train/sun2018_step.py`). Sun2018's stage 1
(landmark generation from the obfuscated head) is not needed: Safe Fakes takes the landmarks
from the original face, so it is not implemented. The architecture follows pix2pix (Isola et
al., CVPR'17: `unet_256` generator, 70 x 70 `n_layers=3` PatchGAN), Sun2018's PG2 lineage,
scaled to 128. Choices we had to make (none of them is given by either paper):

* **Generator input**: cat(black-out image, landmark maps). The black-out image is the crop in
  [-1, 1] with the box set to -1 (black) in every channel (`blackout_condition`; DeepPrivacy's
  condition uses 0, mid-grey). The 68 landmarks, normalised `(x, y) = (column + 0.5, row +
  0.5) / side` of the crop, are one-hot maps at the input resolution (`gan_layers.keypoint_maps`,
  68 channels, in dlib's order); a NaN landmark sets nothing, so a face without landmarks gets
  empty maps and still runs (Safe Fakes' "face-like blobs", decision 7). Landmarks enter at the
  input only (as PG2's pose maps), not at every decoder level (as DeepPrivacy's).
* **Depth and channels**: log2(resolution) stride-2 4x4 convolutions down to 1 x 1 (7 at 128:
  pix2pix's `unet_256` less one level), channels `ngf * min(2^i, 8)` with ngf = 64 * `width`
  (64, 128, 256, 512, 512, 512, 512); the decoder mirrors it with stride-2 4x4 transposed
  convolutions (Flax 'SAME' padding: PyTorch's `ConvTranspose2d(4, 2, 1)` with the kernel
  flipped), each taking cat(previous decoder output, the encoder output of its level) (the
  skips); the last one maps to 3 channels, then tanh: the whole crop in [-1, 1].
* **Activations and norms** (pix2pix's block): LeakyReLU(0.2) before every encoder conv but the
  first, ReLU before every decoder conv; **InstanceNorm** (learned scale and offset) after every
  conv except the first encoder conv, the innermost (1 x 1) one and the output conv. Not
  pix2pix's BatchNorm: pix2pix normalises with the test batch's statistics at test time, which
  at its batch size 1 is instance normalisation; InstanceNorm makes a face's output independent
  of the other faces in its batch (the anonymizer pads fixed batches) and leaves no
  `batch_stats`. Convs followed by a norm have no bias (pix2pix with BatchNorm).
* **Dropout** 0.5 after the norm of the decoder blocks at 512 channels next to the innermost one
  (pix2pix: `num_downs - 5` of them; 2 at 128, none below 64), in training only (`train=True`,
  rng `dropout`); inference is deterministic (pix2pix keeps dropout on at test time as its only
  noise; an anonymizer's output should not depend on a draw).
* **Discriminator**: pix2pix's PatchGAN with `n_layers=3`: 4x4 convs 64 (stride 2, no norm),
  128, 256 (stride 2), 512 (stride 1), each InstanceNorm + LeakyReLU(0.2), then a 4x4 conv to
  one logit per patch (14 x 14 at 128; resolution >= 32). It is conditional as pix2pix's: it sees
  cat(image, the generator's input), i.e. the image, the black-out input **and the landmark
  maps** (`use_landmarks=True`, 74 channels, so that it can judge whether the face follows the
  landmarks); `use_landmarks=False` gives the (image, obfuscated) discriminator of the
  reference's reading of Sun2018 (6 channels).
* **Init**: conv kernels N(0, 0.02), biases 0 (pix2pix `init_type='normal'`); norm scale 1.

`width` scales the channels (smaller networks for the smoke configs), `resolution` (a power of two
>= 8; the discriminator needs >= 32) sets the depth; `dtype` is the compute dtype (parameters
are float32, outputs float32).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from safefakes_jax.models import gan_layers

NUM_LANDMARKS = 68
BLACKOUT_VALUE = -1.0  # The box's value in the generator input: black in [-1, 1].
INIT = nn.initializers.normal(0.02)


def depth(resolution: int) -> int:
    """The number of stride-2 levels: log2(resolution) (7 at 128, down to 1 x 1)."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two >= 8, got {resolution}')
    return int(math.log2(resolution))


def generator_channels(level: int, width: float = 1.0) -> int:
    """Channels of encoder level `level` (0 = the first conv): `ngf * min(2^level, 8)`."""
    return max(1, int(64 * width)) * min(2**level, 8)


def blackout_condition(
    images: jax.Array, boxes: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The inpainting inputs of uint8 crops [B, R, R, 3] and their boxes [B, 4] (`x1 y1 x2 y2`).

    Returns:
      (real in [-1, 1], mask = 1 inside the box, condition = real with the box black, -1, in
      every channel).
    """
    real = images.astype(jnp.float32) / 127.5 - 1.0
    mask = gan_layers.box_mask(boxes, real.shape[1])
    return real, mask, jnp.where(mask > 0, BLACKOUT_VALUE, real)


def _check(name: str, x: jax.Array, shape: tuple) -> None:
    if x.ndim != len(shape) or any(
        s is not None and d != s for d, s in zip(x.shape, shape, strict=True)
    ):
        want = ', '.join('N' if s is None else str(s) for s in shape)
        raise ValueError(f'{name} must have shape [{want}], got {list(x.shape)}')


def _norm(x: jax.Array, name: str, dtype: Any) -> jax.Array:
    return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, name=name)(x)


class Generator(nn.Module):
    """The Sun2018 / pix2pix U-Net generator (module docstring).

    Attributes:
        width: channel multiplier (1.0: ngf 64, 512 channels at the bottom).
        resolution: input and output side (128; a power of two >= 8).
        num_landmarks: landmarks per face (68).
        dropout: the decoder's dropout rate in training.
        dtype: compute dtype; parameters are float32, the output is float32.
    """

    width: float = 1.0
    resolution: int = 128
    num_landmarks: int = NUM_LANDMARKS
    dropout: float = 0.5
    dtype: Any = jnp.float32
    # What the generator takes as points (the evaluators' batches carry them as `keypoints`).
    points_input: ClassVar[str] = 'landmarks68'

    @nn.compact
    def __call__(
        self, condition: jax.Array, landmarks: jax.Array, train: bool = False
    ) -> jax.Array:
        """Generates the whole crop.

        Args:
            condition: [N, R, R, 3] float RGB in [-1, 1], the face box -1 in all channels.
            landmarks: [N, 68, 2] (x, y) = (column + 0.5, row + 0.5) / side of the crop, NaN
                where absent.
            train: apply dropout (needs the `dropout` rng).

        Returns:
            [N, R, R, 3] float32 in [-1, 1] (tanh).
        """
        res = self.resolution
        levels = depth(res)
        _check('condition', condition, (None, res, res, 3))
        _check('landmarks', landmarks, (condition.shape[0], self.num_landmarks, 2))
        ch = [generator_channels(i, self.width) for i in range(levels)]
        maps = gan_layers.keypoint_maps(landmarks, res, self.dtype)
        x = jnp.concatenate([condition.astype(self.dtype), maps], axis=-1)
        skips = []
        for i in range(levels):
            normed = 0 < i < levels - 1
            if i:
                x = gan_layers.leaky_relu(x)
            x = nn.Conv(
                ch[i], (4, 4), (2, 2), ((1, 1), (1, 1)), use_bias=not normed, kernel_init=INIT,
                dtype=self.dtype, name=f'down{i}',
            )(x)  # fmt: skip
            if normed:
                x = _norm(x, f'down{i}_norm', self.dtype)
            skips.append(x)
        for i in reversed(range(levels)):
            if i < levels - 1:
                x = jnp.concatenate([x, skips[i]], axis=-1)
            x = nn.relu(x)
            out = 3 if i == 0 else ch[i - 1]
            x = nn.ConvTranspose(
                out, (4, 4), (2, 2), 'SAME', use_bias=i == 0, kernel_init=INIT,
                dtype=self.dtype, name=f'up{i}',
            )(x)  # fmt: skip
            if i:
                x = _norm(x, f'up{i}_norm', self.dtype)
                if 4 <= i <= levels - 2:  # pix2pix's dropout blocks (module docstring).
                    x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return jnp.tanh(x.astype(jnp.float32))

    def inpaint(
        self, images: jax.Array, boxes: jax.Array, landmarks: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(output, real, mask, condition) of uint8 crops and their boxes (`blackout_condition`),
        for the evaluators (`evaluators/generated_faces.py`); all float32, in [-1, 1]."""
        real, mask, condition = blackout_condition(images, boxes)
        return self(condition, landmarks), real, mask, condition


class Discriminator(nn.Module):
    """The conditional 70 x 70 PatchGAN (pix2pix `n_layers=3`; module docstring).

    Attributes:
        width: channel multiplier (1.0: 64 .. 512 channels).
        resolution: input side (128; a power of two >= 32).
        num_landmarks: landmarks per face (68).
        use_landmarks: also condition on the landmark maps (pix2pix: on the whole generator
            input).
        n_layers: stride-2 convs after the first (pix2pix: 3).
        dtype: compute dtype; parameters are float32.
    """

    width: float = 1.0
    resolution: int = 128
    num_landmarks: int = NUM_LANDMARKS
    use_landmarks: bool = True
    n_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array, condition: jax.Array, landmarks: jax.Array) -> jax.Array:
        """Scores patches of (real or generated) crops.

        Args:
            image: [N, R, R, 3] real or generated crop in [-1, 1].
            condition: [N, R, R, 3] the generator's black-out input.
            landmarks: [N, 68, 2] as for `Generator` (read when `use_landmarks`).

        Returns:
            [N, P, P, 1] float32 logits (P = R / 2^n_layers - 2: 14 at 128).
        """
        res = self.resolution
        if res // 2**self.n_layers < 3 or res & (res - 1):
            raise ValueError(
                f'the PatchGAN needs a power-of-two resolution >= {3 * 2**self.n_layers}, got {res}'
            )
        _check('image', image, (None, res, res, 3))
        n = image.shape[0]
        _check('condition', condition, (n, res, res, 3))
        _check('landmarks', landmarks, (n, self.num_landmarks, 2))
        inputs = [image.astype(self.dtype), condition.astype(self.dtype)]
        if self.use_landmarks:
            inputs.append(gan_layers.keypoint_maps(landmarks, res, self.dtype))
        x = jnp.concatenate(inputs, axis=-1)
        ndf = max(1, int(64 * self.width))
        for i in range(self.n_layers + 1):
            stride = 2 if i < self.n_layers else 1
            x = nn.Conv(
                ndf * min(2**i, 8), (4, 4), (stride, stride), ((1, 1), (1, 1)),
                use_bias=i == 0, kernel_init=INIT, dtype=self.dtype, name=f'conv{i}',
            )(x)  # fmt: skip
            if i:
                x = _norm(x, f'conv{i}_norm', self.dtype)
            x = gan_layers.leaky_relu(x)
        x = nn.Conv(1, (4, 4), (1, 1), ((1, 1), (1, 1)), kernel_init=INIT, dtype=self.dtype,
                    name='logits')(x)  # fmt: skip
        return x.astype(jnp.float32)
