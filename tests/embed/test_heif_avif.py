"""HEIC/HEIF (pillow-heif) and AVIF (Pillow) decode under the same guards as every other format."""

from __future__ import annotations

import calendar
import subprocess
import sys

import pytest
from PIL import features

from img_agent.embed import heif
from img_agent.embed.decode import (
    PIXEL_LIMIT_VARIABLE,
    check_declared_size,
    decode_image,
)
from img_agent.errors import ImageDecodeError
from img_agent.results import PhotoMeta
from img_agent.testing.exif_photos import photo_bytes

pillow_heif = pytest.importorskip("pillow_heif")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF codec")

MAX_PIXELS = 10_000_000
EXIF = {"make": "Apple", "model": "iPhone 15 Pro", "orientation": 6, "taken": "2024:05:01 09:15:00",
        "offset": "-04:00", "lat_ref": "N", "lat": ((40, 1), (45, 1), (0, 1)), "lon_ref": "W",
        "lon": ((73, 1), (59, 1), (0, 1))}


@pytest.fixture(scope="module")
def heic() -> bytes:
    pillow_heif.register_heif_opener()  # to write one; reading registers it by itself
    return photo_bytes(3, size=(64, 48), fmt="HEIF", **EXIF)


def test_heic_decodes_upright_with_its_exif_facts(heic):
    assert heic[4:12] == b"ftypheic"
    out = decode_image(heic, max_pixels=MAX_PIXELS, draft_size=16)
    assert out.format == "HEIF" and (out.width, out.height) == (48, 64)  # orientation 6: shown turned
    assert out.image.mode == "RGB" and out.image.size[0] < out.image.size[1]
    assert out.photo == PhotoMeta(
        taken_at=float(calendar.timegm((2024, 5, 1, 13, 15, 0))), taken_offset="-04:00", camera_make="Apple",
        camera_model="iPhone 15 Pro", gps_lat=pytest.approx(40.75), gps_lon=pytest.approx(-(73 + 59 / 60)),
        orientation=6,
    )


@needs_avif
def test_avif_decodes_upright_with_its_exif_facts():
    data = photo_bytes(4, size=(64, 48), fmt="AVIF", **EXIF)
    out = decode_image(data, max_pixels=MAX_PIXELS)
    assert out.format == "AVIF" and (out.width, out.height) == (48, 64) and out.image.size == (48, 64)
    assert out.photo.camera_model == "iPhone 15 Pro" and out.photo.orientation == 6
    assert out.photo.taken_at == calendar.timegm((2024, 5, 1, 13, 15, 0))


def test_an_oversized_heic_is_refused_before_decoding(heic):
    with pytest.raises(ImageDecodeError, match=f"image too large: 48x64 .*{PIXEL_LIMIT_VARIABLE}"):
        decode_image(heic, max_pixels=48 * 64 - 1)
    with pytest.raises(ImageDecodeError, match="image too large: 48x64 pixels exceeds"):
        check_declared_size(heic, max_pixels=1000)
    assert check_declared_size(heic, max_pixels=48 * 64) == ("HEIF", 48, 64)


def test_a_truncated_heic_is_a_decode_error(heic):
    for cut in (12, 40, len(heic) // 2):
        with pytest.raises(ImageDecodeError, match="^truncated or corrupt image: "):
            decode_image(heic[:cut], max_pixels=MAX_PIXELS)


def test_without_a_decoder_the_reason_says_what_to_install(monkeypatch, heic):
    monkeypatch.setattr(heif, "_heif_ready", False)  # as when pillow-heif is not installed
    assert heif.missing_decoder(heic[:64]).startswith("HEIC needs pillow-heif: pip install pillow-heif")
    avif_head = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"
    monkeypatch.setattr(features, "check", lambda name: False)
    assert heif.missing_decoder(avif_head).startswith("AVIF is not supported by this Pillow build")
    assert heif.missing_decoder(b"\x89PNG\r\n\x1a\n" + b"\x00" * 56) is None


def test_the_heif_plugin_is_loaded_only_when_a_heif_file_is_decoded():
    code = (
        "import sys\n"
        "import img_agent.tools.image_tools\n"
        "from img_agent.embed.decode import decode_image\n"
        "from img_agent.testing.exif_photos import photo_bytes\n"
        "decode_image(photo_bytes(1), max_pixels=10**6)\n"
        "assert 'pillow_heif' not in sys.modules, 'imported too early'\n"
        "import pillow_heif\n"
        "pillow_heif.register_heif_opener()\n"
        "data = photo_bytes(2, fmt='HEIF')\n"
        "from PIL import Image\n"
        "Image.OPEN.pop('HEIF'); Image.ID.remove('HEIF')\n"
        "print(decode_image(data, max_pixels=10**6).format)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "HEIF"
