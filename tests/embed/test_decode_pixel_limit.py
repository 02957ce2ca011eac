"""The too-large reason states the image's pixel count and the configured limit, and how to raise it."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from img_agent.embed.decode import check_declared_size, decode_image_bytes
from img_agent.errors import ImageDecodeError


def _blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` zeros, built without holding the pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def _keep_pillow_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def test_above_pillows_own_limit_the_reason_quotes_the_configured_limit():
    data = _blank_png(20_000, 20_000)  # 400 M pixels: Pillow's default refuses it at open
    with pytest.raises(ImageDecodeError) as info:
        decode_image_bytes(data, max_pixels=10_000_000)
    message = str(info.value)
    assert message.startswith("image too large: ")
    assert "400,000,000 pixels" in message and "configured limit of 10,000,000 pixels" in message
    assert "IMG_AGENT_MAX_IMAGE_PIXELS" in message
    assert str(2 * Image.MAX_IMAGE_PIXELS) not in message.replace(",", "")


def test_below_pillows_limit_the_reason_has_size_count_and_variable():
    with pytest.raises(ImageDecodeError) as info:
        decode_image_bytes(_blank_png(4_000, 3_000), max_pixels=1_000_000)
    assert str(info.value) == (
        "image too large: 4000x3000 (12,000,000) pixels exceeds the configured limit of 1,000,000 pixels; "
        "to index it, raise IMG_AGENT_MAX_IMAGE_PIXELS (max_image_pixels) above 11,999,999"
    )


def test_a_configured_limit_above_pillows_is_the_one_that_decides():
    data = _blank_png(20_000, 10_000)  # 200 M pixels: above Pillow's default refusal (about 179 M)
    assert check_declared_size(data, max_pixels=250_000_000) == ("PNG", 20_000, 10_000)
    with pytest.raises(ImageDecodeError, match=r"\(200,000,000\) pixels exceeds the configured limit of 190,000,000"):
        decode_image_bytes(data, max_pixels=190_000_000)
