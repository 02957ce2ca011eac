"""Decoding image bytes: bombs, truncation, EXIF, draft sizes and every colour mode, nothing prints."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_agent.embed.decode import decode_image_bytes, make_thumbnail, to_rgb
from img_agent.embed.images import read_image_file
from img_agent.errors import ImageDecodeError, InvalidInputError

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000


def _png_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **params)
    return out.getvalue()


def _jpeg_bytes(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **params)
    return out.getvalue()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A 20000x20000 1-bit PNG: ~50 KB on disk, 400 million pixels once decoded."""
    return _png_bytes(Image.new("1", (20_000, 20_000)))


def test_read_truncated_jpeg(tmp_path: Path):
    data = _jpeg_bytes(_photo(200, 150))
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"^truncated or corrupt image: "):
        read_image_file(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


# --------------------------------------------------------------------------- decode_image_bytes


def test_decompression_bomb_is_refused_from_the_header(bomb_png: bytes):
    assert len(bomb_png) < 200_000
    with pytest.raises(ImageDecodeError, match=r"^image too large: "):
        decode_image_bytes(bomb_png, max_pixels=MAX_PIXELS)


def test_too_many_pixels_names_size_and_limit_without_warnings():
    data = _png_bytes(Image.new("1", (10_000, 9_000)))  # above Pillow's warning threshold (89.5 M)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageDecodeError) as info:
            decode_image_bytes(data, max_pixels=MAX_PIXELS)
    assert str(info.value).startswith(
        "image too large: 10000x9000 (90,000,000) pixels exceeds the configured limit of 10,000,000 pixels")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_exif_orientation_swaps_width_and_height():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    base = Image.new("RGB", (40, 20), (255, 0, 0))
    base.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left of the stored image
    image, fmt, width, height = decode_image_bytes(_jpeg_bytes(base, exif=exif, quality=95), max_pixels=MAX_PIXELS)
    assert fmt == "JPEG" and (width, height) == (20, 40) == image.size
    r, _, b = image.getpixel((10, 2))  # stored left edge is now the top
    assert b > 200 and r < 60


def test_jpeg_draft_decodes_smaller_but_reports_full_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _jpeg_bytes(_photo(800, 400), exif=exif)
    image, _, width, height = decode_image_bytes(data, max_pixels=MAX_PIXELS, draft_size=64)
    assert (width, height) == (400, 800)
    assert image.width < 400 and image.height < 800 and min(image.size) >= 64
    assert image.height > image.width  # orientation applied to the reduced image too


def test_other_formats_are_reduced_with_draft_size():
    image, fmt, width, height = decode_image_bytes(_png_bytes(_photo(800, 600)), max_pixels=MAX_PIXELS, draft_size=100)
    assert fmt == "PNG" and (width, height) == (800, 600)
    assert image.size == (134, 100)  # 800 / 6, rounded up
    full, *_ = decode_image_bytes(_png_bytes(_photo(800, 600)), max_pixels=MAX_PIXELS)
    assert full.size == (800, 600)


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 0] * 255)  # index 0 red
    pal.paste(1, (0, 0, 4, 8))  # left half index 1 ...
    image, fmt, *_ = decode_image_bytes(_png_bytes(pal, transparency=1), max_pixels=MAX_PIXELS)  # ... transparent
    assert fmt == "PNG" and image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((6, 1)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "La", "PA"])
def test_alpha_is_composited_on_white(mode: str):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 2, 4))
    src = rgba.convert("LA").convert(mode) if mode == "La" else rgba.convert(mode)
    assert src.mode == mode
    image = to_rgb(src)
    assert image.mode == "RGB"
    assert image.getpixel((3, 0)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb():
    image, fmt, *_ = decode_image_bytes(
        _jpeg_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95), max_pixels=MAX_PIXELS
    )
    assert fmt == "JPEG" and image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    arr = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    image, fmt, width, height = decode_image_bytes(_png_bytes(src), max_pixels=MAX_PIXELS)
    assert (fmt, width, height, image.mode) == ("PNG", 4, 1, "RGB")
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]


def test_float_and_32_bit_images_are_scaled():
    as_float = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F"))
    assert [as_float.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    as_int = to_rgb(Image.fromarray(np.array([[-10, 0, 10]], dtype=np.int32), "I"))
    assert [as_int.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    bilevel = to_rgb(Image.new("1", (2, 2), 1))
    assert bilevel.mode == "RGB" and bilevel.getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_first_frame_in_rgb():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((0, 255, 0), (255, 0, 0))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image, fmt, width, height = decode_image_bytes(out.getvalue(), max_pixels=MAX_PIXELS)
    assert (fmt, width, height, image.mode) == ("GIF", 10, 10, "RGB")
    r, g, _ = image.getpixel((5, 5))
    assert g > 200 and r < 60


def test_truncated_png_is_reported():
    data = _png_bytes(_photo(64, 64))
    with pytest.raises(ImageDecodeError, match=r"^truncated or corrupt image: "):
        decode_image_bytes(data[: len(data) // 2], max_pixels=MAX_PIXELS)


# --------------------------------------------------------------------------- thumbnails


def test_thumbnail_is_a_small_jpeg_with_the_same_aspect():
    data = make_thumbnail(_photo(400, 200), max_side=64, quality=70)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and thumb.size == (64, 32)
    rgba_thumb = Image.open(io.BytesIO(make_thumbnail(Image.new("RGBA", (10, 10), (0, 0, 0, 0)))))
    assert rgba_thumb.size == (10, 10) and rgba_thumb.getpixel((5, 5))[0] > 245  # transparent -> white
    with pytest.raises(InvalidInputError):
        make_thumbnail(_photo(10, 10), max_side=0)
    with pytest.raises(InvalidInputError):
        make_thumbnail(_photo(10, 10), quality=101)
