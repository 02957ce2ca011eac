"""Generated photos with EXIF facts (date, camera, lens, GPS, orientation), for tests and demos."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

__all__ = ["Rational", "exif_bytes", "photo_bytes", "write_photo"]

Rational = tuple[int, int]
"""A rational as (numerator, denominator), as EXIF stores degrees, minutes and seconds."""

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, ORIENTATION, DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
DATETIME_ORIGINAL, DATETIME_DIGITIZED, OFFSET_TIME, OFFSET_TIME_ORIGINAL = 0x9003, 0x9004, 0x9010, 0x9011
SUBSEC_TIME_ORIGINAL, LENS_MODEL = 0x9291, 0xA434
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4


def _dms(value: Sequence[Rational] | Any) -> Any:
    if isinstance(value, (tuple, list)) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return tuple(IFDRational(num, den) for num, den in value)
    return value


def exif_bytes(
    *,
    make: Any = None,
    model: Any = None,
    orientation: Any = None,
    taken: Any = None,
    offset: Any = None,
    subsec: Any = None,
    digitized: Any = None,
    datetime: Any = None,
    offset_time: Any = None,
    lens: Any = None,
    lat: Any = None,
    lat_ref: Any = None,
    lon: Any = None,
    lon_ref: Any = None,
) -> bytes:
    """An EXIF block holding each given value (None: the tag is left out).

    ``taken`` is DateTimeOriginal ("YYYY:MM:DD HH:MM:SS"), ``offset`` OffsetTimeOriginal ("+02:00"),
    ``subsec`` SubSecTimeOriginal, ``digitized`` DateTimeDigitized, ``datetime`` DateTime (IFD0),
    ``offset_time`` OffsetTime; ``lat``/``lon`` are (degrees, minutes, seconds) as ``(num, den)``
    rationals (or any raw value, to write garbage), with their "N"/"S" and "E"/"W" references.
    """
    exif = Image.Exif()
    for tag, value in ((MAKE, make), (MODEL, model), (ORIENTATION, orientation), (DATETIME, datetime)):
        if value is not None:
            exif[tag] = value
    sub = {DATETIME_ORIGINAL: taken, OFFSET_TIME_ORIGINAL: offset, SUBSEC_TIME_ORIGINAL: subsec,
           DATETIME_DIGITIZED: digitized, OFFSET_TIME: offset_time, LENS_MODEL: lens}
    if any(v is not None for v in sub.values()):
        ifd = exif.get_ifd(EXIF_IFD)
        ifd.update({tag: value for tag, value in sub.items() if value is not None})
    gps = {GPS_LAT_REF: lat_ref, GPS_LAT: _dms(lat), GPS_LON_REF: lon_ref, GPS_LON: _dms(lon)}
    if any(v is not None for v in gps.values()):
        ifd = exif.get_ifd(GPS_IFD)
        ifd.update({tag: value for tag, value in gps.items() if value is not None})
    return exif.tobytes()


def _picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """A small picture that differs visibly with ``seed`` (so photos do not share content)."""
    img = Image.new("RGB", size, ((seed * 97) % 256, (seed * 57 + 80) % 256, (seed * 31 + 160) % 256))
    img.paste(((seed * 13) % 256, 255 - (seed * 29) % 256, (seed * 71) % 256),
              (seed % (size[0] // 2), 0, size[0] // 2 + seed % (size[0] // 2), size[1] // 2))
    return img


def photo_bytes(seed: int = 0, *, size: tuple[int, int] = (64, 48), fmt: str = "JPEG", **exif: Any) -> bytes:
    """An encoded picture (``fmt``: JPEG, PNG, WEBP, AVIF, HEIF with pillow-heif registered) with the EXIF ``exif``."""
    out = io.BytesIO()
    block = exif_bytes(**exif) if exif else None
    options: dict[str, Any] = {"exif": block} if block else {}
    _picture(seed, size).save(out, format=fmt, **options)
    return out.getvalue()


def write_photo(path: str | Path, seed: int = 0, **options: Any) -> Path:
    """Write :func:`photo_bytes` to ``path`` (parent folders made); the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(photo_bytes(seed, **options))
    return target
