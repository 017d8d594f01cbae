"""The one image codec of the project: decode, encode, and size without decoding.

One EXIF policy everywhere: **orientation is ignored**. The WIDER ground truth boxes refer to
the stored pixel grid, and OpenCV (`IMREAD_IGNORE_ORIENTATION`) and tf.data's decoders read
that grid too, so a crop cut from a rotated JPEG agrees with its box only when nobody rotates
it. In memory an image is RGB uint8 [H, W, 3]: grayscale is repeated to three channels, CMYK
JPEGs are converted by libjpeg, an alpha channel is dropped, 16-bit PNGs are scaled to 8 bits.

Decoding goes through OpenCV, which returns nothing for corrupt *and* for truncated files (a
truncated JPEG is never half-decoded into grey); such input raises `ImageDecodeError` naming
the file. Encoding writes JPEG (quality 1..100, no EXIF) or lossless PNG.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import PIL.Image

FORMATS = ('jpeg', 'png')


class ImageDecodeError(ValueError):
    """An image file that is missing, empty, corrupt or truncated; the message names it."""


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file.

    Raises:
      ImageDecodeError: it does not exist or cannot be read (the message names it).
    """
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as e:
        raise ImageDecodeError(
            f'{os.fspath(path)}: cannot read image ({e.strerror or e})'
        ) from None


def decode(data: bytes, name: str = '<bytes>') -> np.ndarray:
    """RGB uint8 [H, W, 3] of encoded image bytes (module docstring for the policy).

    Args:
      data: JPEG, PNG, or any format OpenCV reads.
      name: the file the bytes came from, for the error message.

    Raises:
      ImageDecodeError: empty, corrupt or truncated data.
    """
    if not data:
        raise ImageDecodeError(f'{name}: empty image file')
    try:
        bgr = cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        )
    except cv2.error as e:
        raise ImageDecodeError(f'{name}: image does not decode ({e.msg or e})') from None
    if bgr is None:
        raise ImageDecodeError(f'{name}: image is corrupt or truncated (does not decode)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file.

    Raises:
      ImageDecodeError: missing, unreadable, corrupt or truncated (names the file).
    """
    return decode(read_bytes(path), os.fspath(path))


def encode(
    rgb: np.ndarray, image_format: str = 'jpeg', *, jpeg_quality: int = 95, png_compression: int = 3
) -> bytes:
    """Encodes RGB uint8 [H, W, 3] as JPEG (no EXIF) or PNG (lossless).

    Raises:
      ValueError: an unknown format or an image that is not uint8 [H, W, 3].
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected RGB uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}')
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if image_format == 'png':
        ok, buf = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)])
    elif image_format == 'jpeg':
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f'image_format must be one of {FORMATS}, got {image_format!r}')
    if not ok:
        raise RuntimeError('image encoding failed')
    return buf.tobytes()


def size(data: bytes, name: str = '<bytes>') -> tuple[int, int, str]:
    """(width, height, format) of encoded bytes from the header, without decoding the pixels.

    The size is that of the stored pixel grid (EXIF orientation ignored, as `decode` does).
    `format` is Pillow's name in lower case ('jpeg', 'png', ...).

    Raises:
      ImageDecodeError: the header is not that of an image.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            fmt = (im.format or '').lower()
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for non-images.
        raise ImageDecodeError(f'{name}: not an image ({e})') from None
    return int(width), int(height), fmt
