"""EXIF facts read from photos: exact values, hemispheres, offsets, garbage, and no pixel decoded."""

from __future__ import annotations

import calendar
import io
import math

import pytest
from PIL import Image

from img_agent.embed.decode import decode_image, read_photo_meta
from img_agent.embed.exif import MAX_TEXT, photo_meta
from img_agent.embed.images import read_file, read_image_file
from img_agent.embed.photos import read_photo
from img_agent.results import PhotoMeta
from img_agent.testing.exif_photos import photo_bytes, write_photo

MAX_PIXELS = 10_000_000
PARIS = {"lat_ref": "N", "lat": ((48, 1), (51, 1), (2964, 100)), "lon_ref": "E", "lon": ((2, 1), (17, 1), (4000, 100))}
PARIS_LAT = 48 + 51 / 60 + 29.64 / 3600
PARIS_LON = 2 + 17 / 60 + 40 / 3600
FULL = dict(make="Canon", model="Canon EOS R5", orientation=6, taken="2023:07:14 18:30:05", offset="+02:00",
            lens="RF24-105mm F4 L IS USM", **PARIS)


def _meta(data: bytes) -> PhotoMeta:
    with Image.open(io.BytesIO(data)) as img:
        return photo_meta(img)


def test_every_field_is_read_exactly():
    meta = _meta(photo_bytes(**FULL))
    assert meta == PhotoMeta(
        taken_at=float(calendar.timegm((2023, 7, 14, 16, 30, 5))),  # 18:30:05 at +02:00 is 16:30:05 UTC
        taken_offset="+02:00",
        camera_make="Canon",
        camera_model="Canon EOS R5",
        lens="RF24-105mm F4 L IS USM",
        gps_lat=pytest.approx(PARIS_LAT, abs=1e-12),
        gps_lon=pytest.approx(PARIS_LON, abs=1e-12),
        orientation=6,
    )
    assert meta.taken_at == 1689352205.0


def test_southern_and_western_coordinates_are_negative():
    meta = _meta(photo_bytes(lat_ref="S", lat=((33, 1), (51, 1), (3600, 100)),
                             lon_ref="W", lon=((70, 1), (40, 1), (0, 1))))
    assert meta.gps_lat == pytest.approx(-(33 + 51 / 60 + 36 / 3600), abs=1e-12)
    assert meta.gps_lon == pytest.approx(-(70 + 40 / 60), abs=1e-12)
    north_west = _meta(photo_bytes(lat_ref="N", lat=((40, 1), (42, 1), (0, 1)), lon_ref="W", lon=((74, 1), (0, 1), (0, 1))))
    assert north_west.gps_lat == pytest.approx(40.7) and north_west.gps_lon == -74.0


def test_without_an_offset_the_wall_clock_is_read_as_utc():
    meta = _meta(photo_bytes(taken="2023:07:14 18:30:05"))
    assert meta.taken_at == calendar.timegm((2023, 7, 14, 18, 30, 5)) and meta.taken_offset is None
    assert (meta.camera_make, meta.gps_lat, meta.gps_lon, meta.orientation) == (None, None, None, None)


def test_negative_offset_sub_seconds_and_the_fallback_dates():
    west = _meta(photo_bytes(taken="2024:01:31 23:15:00", offset="-05:30", subsec="25"))
    assert west.taken_at == calendar.timegm((2024, 2, 1, 4, 45, 0)) + 0.25 and west.taken_offset == "-05:30"
    digitized = _meta(photo_bytes(digitized="2020:02:29 12:00:00", offset_time="+01:00"))
    assert digitized.taken_at == calendar.timegm((2020, 2, 29, 11, 0, 0)) and digitized.taken_offset == "+01:00"
    plain = _meta(photo_bytes(datetime="1999:12:31 23:59:59"))
    assert plain.taken_at == calendar.timegm((1999, 12, 31, 23, 59, 59)) and plain.taken_offset is None
    # DateTimeOriginal wins over the others
    both = _meta(photo_bytes(taken="2021:06:01 10:00:00", datetime="2022:01:01 00:00:00"))
    assert both.taken_at == calendar.timegm((2021, 6, 1, 10, 0, 0))


def test_text_is_trimmed_and_cut_at_nul_and_empty_is_none():
    meta = _meta(photo_bytes(make="  NIKON CORPORATION\x00\x00\x00", model="\x00", lens="   ",
                             taken="2023:07:14 18:30:05"))
    assert meta.camera_make == "NIKON CORPORATION" and meta.camera_model is None and meta.lens is None
    assert _meta(photo_bytes(model="X" * 500)).camera_model == "X" * MAX_TEXT


def test_a_photo_without_exif_has_no_facts():
    assert _meta(photo_bytes()) == PhotoMeta()
    assert _meta(photo_bytes(fmt="PNG")) == PhotoMeta()
    assert _meta(photo_bytes(fmt="GIF")) == PhotoMeta()


@pytest.mark.parametrize(("tags", "unread"), [
    ({"taken": "0000:00:00 00:00:00"}, "taken_at"),
    ({"taken": "2023:13:45 99:00:00"}, "taken_at"),
    ({"taken": "yesterday"}, "taken_at"),
    ({"taken": "2023:07:14 18:30:05", "offset": "+99:00"}, "taken_offset"),
    ({"taken": "2023:07:14 18:30:05", "offset": "  :  "}, "taken_offset"),
    ({"orientation": 9}, "orientation"),
    ({"orientation": 0}, "orientation"),
    ({"lat_ref": "N", "lat": ((91, 1), (0, 1), (0, 1)), "lon_ref": "E", "lon": ((2, 1), (0, 1), (0, 1))}, "gps_lat"),
    ({"lat_ref": "N", "lat": ((48, 0), (0, 1), (0, 1)), "lon_ref": "E", "lon": ((2, 1), (0, 1), (0, 1))}, "gps_lat"),
    ({"lat_ref": "X", "lat": ((48, 1), (0, 1), (0, 1)), "lon_ref": "E", "lon": ((2, 1), (0, 1), (0, 1))}, "gps_lat"),
    ({"lat_ref": "N", "lat": ((1, 1), (2, 1), (3, 1), (4, 1)), "lon_ref": "E", "lon": ((2, 1), (0, 1), (0, 1))}, "gps_lat"),
    ({"lat_ref": "N", "lat": ((48, 1), (0, 1), (0, 1)), "lon_ref": "E", "lon": ((181, 1), (0, 1), (0, 1))}, "gps_lon"),
])
def test_garbage_values_become_none_and_the_rest_is_kept(tags, unread):
    meta = _meta(photo_bytes(make="Canon", **tags))
    assert getattr(meta, unread) is None and meta.camera_make == "Canon"
    if unread.startswith("gps_"):
        assert meta.gps_lat is None and meta.gps_lon is None  # a position is both or nothing
    if unread == "taken_offset":
        assert meta.taken_at == calendar.timegm((2023, 7, 14, 18, 30, 5))  # read as UTC


def test_a_corrupt_exif_block_never_raises():
    good = photo_bytes(**FULL)
    start = good.index(b"Exif\x00\x00") + 6
    for cut in (8, 30, 60, 120):
        broken = bytearray(good)
        broken[start + cut : start + cut + 40] = b"\xff" * 40  # offsets and counts pointing anywhere
        decoded = decode_image(bytes(broken), max_pixels=MAX_PIXELS)
        assert decoded.format == "JPEG" and decoded.image.mode == "RGB" and isinstance(decoded.photo, PhotoMeta)
        assert isinstance(_meta(bytes(broken)), PhotoMeta)
    assert math.isfinite(_meta(good).gps_lat)


def test_decoding_a_file_records_its_facts_and_turns_the_pixels(tmp_path):
    path = write_photo(tmp_path / "p.jpg", size=(64, 48), **FULL)
    loaded = read_image_file(path, max_bytes=1 << 20, max_pixels=MAX_PIXELS)
    assert loaded.facts.photo == _meta(path.read_bytes())
    assert loaded.facts.photo.orientation == 6 and (loaded.facts.width, loaded.facts.height) == (48, 64)
    assert loaded.image.size == (48, 64)
    assert read_image_file(write_photo(tmp_path / "q.png", fmt="PNG"), max_bytes=1 << 20,
                           max_pixels=MAX_PIXELS).facts.photo == PhotoMeta()


def test_metadata_only_reading_decodes_no_pixel(tmp_path, monkeypatch):
    path = write_photo(tmp_path / "p.jpg", **FULL)
    plain = write_photo(tmp_path / "plain.png", fmt="PNG")
    expected = _meta(path.read_bytes())

    decoded: list[str] = []

    def no_decode(self):
        decoded.append(self.format)
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    assert read_photo(path, max_bytes=1 << 20, max_pixels=MAX_PIXELS) == expected
    assert read_photo(plain, max_bytes=1 << 20, max_pixels=MAX_PIXELS) == PhotoMeta()
    with open(path, "rb") as fh:
        assert read_photo_meta(fh, max_pixels=MAX_PIXELS) == expected
    assert decoded == []


def test_metadata_only_reading_of_unreadable_files(tmp_path):
    assert read_photo(tmp_path / "gone.jpg", max_bytes=1 << 20, max_pixels=MAX_PIXELS) is None
    big = write_photo(tmp_path / "big.jpg", **FULL)
    assert read_photo(big, max_bytes=10, max_pixels=MAX_PIXELS) is None  # over the file size limit
    (tmp_path / "text.jpg").write_text("not an image")
    assert read_photo(tmp_path / "text.jpg", max_bytes=1 << 20, max_pixels=MAX_PIXELS) == PhotoMeta()
    raw = read_file(big, max_bytes=1 << 20)
    assert raw.facts.photo is None  # reading and hashing alone does not look at EXIF
