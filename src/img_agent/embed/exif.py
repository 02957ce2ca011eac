"""What a photo's EXIF says about it: when, with which camera and lens, where, which way up.

:func:`photo_meta` reads an opened (not necessarily decoded) Pillow image's EXIF into a
:class:`~img_agent.results.PhotoMeta`. It never decodes pixels and never raises: EXIF is written by
every camera, phone and editor in its own dialect, and a value that cannot be understood is simply
absent (None), logged at debug level.

Fields and where they come from:

* ``taken_at``: DateTimeOriginal, else DateTimeDigitized, else DateTime ("YYYY:MM:DD HH:MM:SS"),
  plus its sub-second digits (SubSecTime*) when given. With the matching OffsetTime* (else
  OffsetTime) the moment is exact: Unix seconds in UTC and ``taken_offset`` "+HH:MM". Without an
  offset the wall-clock time is read as if it were UTC and ``taken_offset`` is None.
* ``camera_make``, ``camera_model``, ``lens``: Make, Model, LensModel; cut at the first NUL, trimmed,
  at most :data:`MAX_TEXT` characters, empty -> None.
* ``gps_lat``, ``gps_lon``: the GPS IFD's degrees/minutes/seconds rationals, negative for the S and W
  references; both None unless both are finite and in range.
* ``orientation``: 1-8 as the file stores it (HEIF decoders turn the pixels themselves and report
  the stored value separately, which is used then).
"""

from __future__ import annotations

import calendar
import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from PIL import Image

from img_agent.results import PhotoMeta

__all__ = ["MAX_TEXT", "photo_meta"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TEXT = 128
"""Longest camera make, model or lens name kept (characters); longer text is cut."""

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_LENS_MODEL = 0xA434
# (date tag, its sub-second tag, its offset tag), in order of preference; the date tag of the last
# one (DateTime) lives in IFD0, the others in the Exif IFD.
_DATES = (
    (0x9003, 0x9291, 0x9011),  # DateTimeOriginal, SubSecTimeOriginal, OffsetTimeOriginal
    (0x9004, 0x9292, 0x9012),  # DateTimeDigitized, SubSecTimeDigitized, OffsetTimeDigitized
    (_DATETIME, 0x9290, 0x9010),  # DateTime, SubSecTime, OffsetTime
)
_OFFSET_TIME = 0x9010
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4

_DATE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")
_MAX_OFFSET_MINUTES = 14 * 60


def photo_meta(img: Image.Image) -> PhotoMeta:
    """The EXIF facts of ``img`` (opened lazily is enough); all None when it has no EXIF. Never raises."""
    exif = _guard("EXIF block", lambda: _exif_of(img))
    if exif is None:
        return PhotoMeta()
    sub = _guard("Exif IFD", lambda: dict(exif.get_ifd(_EXIF_IFD))) or {}
    gps = _guard("GPS IFD", lambda: dict(exif.get_ifd(_GPS_IFD))) or {}
    base = _guard("IFD0", lambda: dict(exif)) or {}
    taken = _guard("date taken", lambda: _taken(base, sub))
    lat, lon = _guard("GPS position", lambda: _position(gps)) or (None, None)
    orientation = img.info.get("original_orientation", base.get(_ORIENTATION))
    return PhotoMeta(
        taken_at=taken[0] if taken else None,
        taken_offset=taken[1] if taken else None,
        camera_make=_guard("Make", lambda: _text(base.get(_MAKE))),
        camera_model=_guard("Model", lambda: _text(base.get(_MODEL))),
        lens=_guard("LensModel", lambda: _text(sub.get(_LENS_MODEL))),
        gps_lat=lat,
        gps_lon=lon,
        orientation=orientation if type(orientation) is int and 1 <= orientation <= 8 else None,
    )


def _guard(what: str, read: Callable[[], T]) -> T | None:
    """``read()``, or None (logged at debug) when the EXIF it reads is unusable in any way."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - any malformed EXIF value means "not recorded"
        logger.debug("ignoring unusable EXIF %s: %s: %s", what, type(exc).__name__, exc)
        return None


def _exif_of(img: Image.Image) -> Image.Exif | None:
    # A PNG's eXIf chunk may follow the pixels; Pillow would decode them all to look: not here.
    if img.format == "PNG" and "exif" not in img.info and img.tile:
        return None
    exif = img.getexif()
    return exif if len(exif) or "original_orientation" in img.info else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.split("\x00", 1)[0].strip()[:MAX_TEXT].strip()
    return value or None


def _taken(base: Mapping[int, Any], sub: Mapping[int, Any]) -> tuple[float, str | None] | None:
    """(Unix seconds, offset) of the first readable date of :data:`_DATES`; None when none is."""
    for date_tag, subsec_tag, offset_tag in _DATES:
        ifd = base if date_tag == _DATETIME else sub
        wall = _wall_clock(ifd.get(date_tag))
        if wall is None:
            continue
        seconds = float(calendar.timegm(wall.timetuple())) + _fraction(sub.get(subsec_tag))
        offset = _offset(sub.get(offset_tag))
        if offset is None and offset_tag != _OFFSET_TIME:
            offset = _offset(sub.get(_OFFSET_TIME))
        if offset is None:
            return seconds, None
        return seconds - offset[0] * 60, offset[1]
    return None


def _wall_clock(value: Any) -> datetime | None:
    text = _text(value)
    found = _DATE.match(text) if text else None
    if found is None:
        return None
    try:
        return datetime(*(int(part) for part in found.groups()))  # a wall-clock time, no zone
    except ValueError:  # "0000:00:00 00:00:00", month 13, ...
        return None


def _fraction(value: Any) -> float:
    text = _text(value)
    return int(text) / 10 ** len(text) if text and text.isascii() and text.isdigit() else 0.0


def _offset(value: Any) -> tuple[int, str] | None:
    """(minutes east of UTC, "+HH:MM") of an EXIF offset such as "+02:00"; None when unreadable."""
    text = _text(value)
    if text in ("Z", "+00", "-00"):
        return 0, "+00:00"
    found = _OFFSET.fullmatch(text) if text else None
    if found is None:
        return None
    sign, hours, minutes = found.group(1), int(found.group(2)), int(found.group(3))
    total = hours * 60 + minutes
    if minutes >= 60 or total > _MAX_OFFSET_MINUTES:
        return None
    return (-total if sign == "-" else total), f"{sign}{hours:02d}:{minutes:02d}"


def _position(gps: Mapping[int, Any]) -> tuple[float | None, float | None]:
    lat = _coordinate(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "N", "S", 90.0)
    lon = _coordinate(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "E", "W", 180.0)
    return (lat, lon) if lat is not None and lon is not None else (None, None)


def _coordinate(value: Any, ref: Any, positive: str, negative: str, limit: float) -> float | None:
    """Degrees from (degrees, minutes, seconds) rationals; negative for the ``negative`` reference."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(values) <= 3 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        return None
    parts = [float(v) for v in values]
    if any(not math.isfinite(p) or p < 0 for p in parts):
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    side = (_text(ref) or positive).upper()[:1]
    if side not in (positive, negative) or degrees > limit:
        return None
    return -degrees if side == negative and degrees else degrees
