"""Tests for the one image codec (`data/images.py`): EXIF orientation ignored (crop and box
agree), truncated and corrupt files named, PNG, grayscale and CMYK inputs, size without
decoding."""

import io

import numpy as np
import PIL.Image
import pytest
import skimage.data

from safefakes_jax.data import images


def _jpeg(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buf, 'JPEG', quality=95, **save)
    return buf.getvalue()


@pytest.fixture(scope='module')
def astronaut():
    return skimage.data.astronaut()[:200, :300]  # 300 x 200: not square, so rotation shows.


def test_exif_rotated_jpeg_keeps_the_stored_grid(astronaut, tmp_path):
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW when displayed.
    data = _jpeg(astronaut, exif=exif.tobytes())
    with PIL.Image.open(io.BytesIO(data)) as im:
        assert im.getexif()[0x0112] == 6
    rgb = images.decode(data, 'rotated.jpg')
    assert rgb.shape == astronaut.shape and rgb.dtype == np.uint8
    assert images.size(data) == (300, 200, 'jpeg')
    # A box on the stored grid still holds the same face pixels (JPEG noise only).
    box = (slice(30, 120), slice(170, 260))
    assert np.abs(rgb[box].astype(int) - astronaut[box]).mean() < 3
    path = tmp_path / 'rotated.jpg'
    path.write_bytes(data)
    np.testing.assert_array_equal(images.read(path), rgb)


def test_truncated_corrupt_empty_and_missing_files_name_the_file(astronaut, tmp_path):
    data = _jpeg(astronaut)
    for bad, what in (
        (data[: len(data) // 2], 'corrupt or truncated'),
        (b'not an image at all', 'corrupt or truncated'),
        (b'', 'empty'),
    ):
        path = tmp_path / 'bad.jpg'
        path.write_bytes(bad)
        with pytest.raises(images.ImageDecodeError, match=rf'{path}: .*{what}'):
            images.read(path)
    with pytest.raises(images.ImageDecodeError, match='missing.jpg: cannot read'):
        images.read(tmp_path / 'missing.jpg')
    with pytest.raises(images.ImageDecodeError, match='x.bin: not an image'):
        images.size(b'garbage', 'x.bin')


def test_png_grayscale_cmyk_and_alpha_become_rgb(astronaut):
    png = images.encode(astronaut, 'png')
    np.testing.assert_array_equal(images.decode(png), astronaut)  # Lossless.
    assert images.size(png) == (300, 200, 'png')
    grey = astronaut.mean(-1).astype(np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(grey).save(buf, 'PNG')
    out = images.decode(buf.getvalue())
    assert out.shape == (200, 300, 3)
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 2], grey)
    buf = io.BytesIO()
    PIL.Image.fromarray(astronaut).convert('CMYK').save(buf, 'JPEG', quality=95)
    cmyk = images.decode(buf.getvalue())
    assert cmyk.shape == astronaut.shape
    assert np.abs(cmyk.astype(int) - astronaut).mean() < 6  # Converted, not inverted.
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 7, np.uint8)])
    buf = io.BytesIO()
    PIL.Image.fromarray(rgba).save(buf, 'PNG')
    np.testing.assert_array_equal(images.decode(buf.getvalue()), astronaut)


def test_encode_jpeg_quality_and_bad_input(astronaut):
    small, large = images.encode(astronaut, jpeg_quality=30), images.encode(astronaut)
    assert len(small) < len(large)
    assert np.abs(images.decode(large).astype(int) - astronaut).mean() < 3
    with PIL.Image.open(io.BytesIO(large)) as im:
        assert not im.getexif()
    with pytest.raises(ValueError, match='image_format'):
        images.encode(astronaut, 'gif')
    with pytest.raises(ValueError, match='uint8'):
        images.encode(astronaut.astype(np.float32))
