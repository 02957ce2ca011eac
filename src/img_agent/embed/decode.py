"""Decoding image bytes: the untrusted-input side of indexing, after the file is read.

Plain Pillow + numpy (no torch), so it is cheap to import and safe to run in decode threads.

* :func:`decode_image` turns bytes into an RGB image with a decompression-bomb guard,
  truncation detection, JPEG draft decoding, EXIF orientation and proper mode conversion, and
  reads the photo's EXIF facts (:func:`~img_agent.embed.exif.photo_meta`) on the way;
  :func:`decode_image_bytes` is the same without the facts.
* :func:`read_photo_meta` reads only the EXIF facts of a file, decoding no pixel.
* :func:`to_rgb` converts any Pillow mode the way a person would see the image.
* :func:`make_thumbnail` renders a small JPEG.

Every decoding failure is an :class:`~img_agent.errors.ImageDecodeError` whose message is a
short, specific human reason ("truncated or corrupt image: ...", "image too large: ...").
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from img_agent.embed.exif import photo_meta
from img_agent.embed.heif import is_heif_or_avif, missing_decoder, prepare_open
from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.results import PhotoMeta

__all__ = [
    "Decoded", "check_declared_size", "decode_image", "decode_image_bytes", "make_thumbnail", "read_photo_meta",
    "to_rgb",
]

logger = logging.getLogger(__name__)

_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
"""Formats whose decoder can scale down while decoding (``Image.draft``)."""

# Pillow's format plugins signal malformed input with a zoo of exception types; every one of
# them means "this is not a usable image" and is turned into an ImageDecodeError naming it.
_PIL_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)

# EXIF orientations 5..8 rotate by 90 degrees, so the displayed width and height swap.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

_WHITE = (255, 255, 255, 255)
_HEAD = 256
"""Bytes at the start of a file enough to tell which decoder plugin it needs."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded image (see :func:`decode_image`)."""

    image: Image.Image
    format: str
    width: int
    height: int
    photo: PhotoMeta


def _silence_pil_bomb_warning() -> None:
    """Keep Pillow's DecompressionBombWarning off stderr; our own ``max_pixels`` guard decides.

    ``warnings.catch_warnings`` is not thread-safe (it swaps the process-wide filter list), so
    decode threads cannot scope a filter per call. Instead one narrow filter, matching only
    this Pillow warning class, is put in place on first use (never at import) and again
    whenever something (such as a test runner) has reset the filter list.
    """
    for action, _message, category, _module, _lineno in warnings.filters:
        if issubclass(Image.DecompressionBombWarning, category):  # the first filter that may apply
            if category is Image.DecompressionBombWarning and action == "ignore":
                return
            break
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


PIXEL_LIMIT_VARIABLE = "IMG_AGENT_MAX_IMAGE_PIXELS"
"""The environment variable that sets ``max_image_pixels``; named in every too-large reason."""

_PIL_LIMIT_LOCK = threading.Lock()
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def too_large(pixels: int, max_pixels: int, size: tuple[int, int] | None = None) -> ImageDecodeError:
    """The too-large reason: the image's pixel count, the configured limit, and how to raise it."""
    shown = f"{size[0]}x{size[1]} ({pixels:,}) pixels" if size else f"{pixels:,} pixels"
    return ImageDecodeError(
        f"image too large: {shown} exceeds the configured limit of {max_pixels:,} pixels; to index it, raise "
        f"{PIXEL_LIMIT_VARIABLE} (max_image_pixels) above {pixels - 1:,}"
    )


def _pillow_no_stricter_than(max_pixels: int) -> None:
    """Pillow refuses images above ``2 * Image.MAX_IMAGE_PIXELS`` itself; keep that at or above ``max_pixels``.

    Our ``max_pixels`` guard decides; Pillow's own check stays as the backstop for frames whose
    size the header does not declare. The limit is only ever raised, under a lock.
    """
    with _PIL_LIMIT_LOCK:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and 2 * current < max_pixels:
            Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2


def _pillow_bomb(exc: Image.DecompressionBombError, max_pixels: int) -> ImageDecodeError:
    """Pillow's bomb error restated against the configured limit."""
    found = _PIL_BOMB_PIXELS.search(str(exc))
    if found:
        return too_large(int(found.group(1)), max_pixels)
    return ImageDecodeError(
        f"image too large: more than the configured limit of {max_pixels:,} pixels; to index it, raise "
        f"{PIXEL_LIMIT_VARIABLE} (max_image_pixels)"
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """``data`` opened lazily (the header only), every failure as an :class:`ImageDecodeError`."""
    if not data:
        raise ImageDecodeError("zero-byte file")
    _silence_pil_bomb_warning()
    _pillow_no_stricter_than(max_pixels)
    prepare_open(data[:_HEAD])
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(_unrecognised(data[:_HEAD])) from None
    except Image.DecompressionBombError as exc:
        raise _pillow_bomb(exc, max_pixels) from None
    except _PIL_DECODE_ERRORS as exc:
        raise ImageDecodeError(f"truncated or corrupt image: {_describe(exc)}") from None


def decode_image_bytes(
    data: bytes, *, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image, str, int, int]:
    """Decode image bytes into ``(rgb_image, format, width, height)``; see :func:`decode_image`."""
    out = decode_image(data, max_pixels=max_pixels, draft_size=draft_size)
    return out.image, out.format, out.width, out.height


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Decoded:
    """Decode image bytes into an RGB image, its format, full size and EXIF facts.

    * The pixel count from the header is checked against ``max_pixels`` before any pixel is
      decoded (decompression-bomb guard); Pillow's own bomb error becomes an ImageDecodeError too.
    * With ``draft_size``, JPEGs decode at a reduced DCT scale whose short side stays
      ``>= draft_size`` (several times faster for photos), and other formats larger than twice
      that are box-reduced after decoding by an integer factor keeping the short side
      ``>= draft_size``. Pass the model's input size.
    * The image is fully loaded here, so truncated files fail now, not later
      (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
    * EXIF orientation is applied; animated images give their first frame (a HEIF file its
      primary image); every mode is converted to RGB properly (see :func:`to_rgb`).
    * HEIC/HEIF (pillow-heif) and AVIF (Pillow) files pass the same guards as any other format.

    ``width`` and ``height`` are the full-resolution size after EXIF orientation, whatever
    draft reduction was used.
    """
    img = _open(data, max_pixels)
    try:
        fmt = img.format or "unknown"
        full_w, full_h = img.size
        if full_w <= 0 or full_h <= 0:
            raise ImageDecodeError(f"truncated or corrupt image: invalid size {full_w}x{full_h}")
        if full_w * full_h > max_pixels:
            raise too_large(full_w * full_h, max_pixels, (full_w, full_h))
        orientation = _exif_orientation(img)
        if orientation in _SWAPPING_ORIENTATIONS:
            full_w, full_h = full_h, full_w

        try:
            if getattr(img, "n_frames", 1) > 1 and fmt != "HEIF":
                img.seek(0)
            if draft_size is not None and fmt in _DRAFT_FORMATS:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
        except Image.DecompressionBombError as exc:
            raise _pillow_bomb(exc, max_pixels) from None
        except MemoryError:
            raise ImageDecodeError(f"image too large: out of memory decoding {full_w}x{full_h} pixels") from None
        except _PIL_DECODE_ERRORS as exc:
            raise ImageDecodeError(f"truncated or corrupt image: {_describe(exc)}") from None

        photo = photo_meta(img)  # before the EXIF orientation is consumed below
        if orientation != 1:
            try:
                ImageOps.exif_transpose(img, in_place=True)
            except _PIL_DECODE_ERRORS as exc:
                # A damaged EXIF block does not make the pixels unusable: keep them unrotated.
                logger.debug("ignoring unusable EXIF orientation (%s)", _describe(exc))
                if orientation in _SWAPPING_ORIENTATIONS:
                    full_w, full_h = full_h, full_w

        if draft_size is not None and fmt not in _DRAFT_FORMATS:
            factor = min(img.size) // draft_size
            if factor >= 2:
                img = img.reduce(factor)

        try:
            rgb = to_rgb(img)
        except _PIL_DECODE_ERRORS as exc:
            raise ImageDecodeError(f"unsupported image: {_describe(exc)}") from None
        if rgb is img:
            rgb = img.copy()  # detached from the decoder and its copy of the file bytes
    finally:
        img.close()
    return Decoded(rgb, fmt, full_w, full_h, photo)


def read_photo_meta(fp: BinaryIO, *, max_pixels: int) -> PhotoMeta:
    """The EXIF facts of the image file open as ``fp``, read from its header: no pixel is decoded.

    A file that is no (longer a) readable image has no facts (all None). Raises only ``OSError``
    from reading ``fp``.
    """
    head = fp.read(_HEAD)
    fp.seek(0)
    _silence_pil_bomb_warning()
    _pillow_no_stricter_than(max_pixels)
    prepare_open(head)
    try:
        with Image.open(fp) as img:
            return photo_meta(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, *_PIL_DECODE_ERRORS) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, UnidentifiedImageError) and exc.errno is not None:
            raise
        logger.debug("no photo metadata: %s", _describe(exc))
        return PhotoMeta()


def check_declared_size(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """``(format, width, height)`` read from the header only: no pixel is decoded, nothing large allocated.

    Raises:
        ImageDecodeError: not an image, a corrupt header, or more than ``max_pixels`` pixels declared
            ("image too large: WxH pixels exceeds N").
    """
    with _open(data, max_pixels) as img:
        fmt, (width, height) = img.format or "unknown", img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"truncated or corrupt image: invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels")
    return fmt, width, height


def _unrecognised(head: bytes) -> str:
    """Why bytes starting with ``head`` that no Pillow plugin opened are not a usable image."""
    missing = missing_decoder(head)
    if missing is not None:
        return missing
    if is_heif_or_avif(head):
        return "truncated or corrupt image: the HEIF/AVIF file cannot be read"
    return "not an image (unrecognised format)"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except _PIL_DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a single-channel I;16*/I/F image to 8-bit ``L``.

    16-bit data maps ``v -> round(v / 257)`` (full range to full range). 32-bit integer data
    already in 0..255 or 0..65535 is treated as 8- or 16-bit; float data in 0..1 is scaled by
    255. Anything else is min-max stretched. NaN and infinities count as 0.
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        arr = arr.reshape(img.size[1], img.size[0])
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        scaled = arr / 257.0
    elif lo >= 0.0 and hi <= 255.0 and img.mode != "F":
        scaled = arr
    elif lo >= 0.0 and hi <= 1.0 and img.mode == "F":
        scaled = arr * 255.0
    elif lo >= 0.0 and hi <= 65535.0 and img.mode != "F":
        scaled = arr / 257.0
    elif hi > lo:
        scaled = (arr - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    if img.mode == "La":  # premultiplied; Pillow converts it only to LA
        img = img.convert("LA")
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a person would see the image.

    Transparency (alpha channel, or a palette / ``tRNS`` transparent colour) is composited
    on white; CMYK and YCbCr convert to RGB; 16-bit and float greyscale are scaled to 8 bits
    (see :func:`_high_bit_depth_to_l`); bilevel and greyscale expand to RGB. An RGB image is
    returned as is.

    Raises:
        ValueError: for a mode Pillow cannot convert to RGB.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    has_alpha = "A" in mode or "a" in mode
    if has_alpha or "transparency" in image.info:
        if mode.startswith(("I", "F")):  # rare: high-bit-depth with tRNS; drop the mask
            return _high_bit_depth_to_l(image).convert("RGB")
        return _composite_on_white(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_bit_depth_to_l(image).convert("RGB")
    return image.convert("RGB")


def make_thumbnail(image: Image.Image, max_side: int = 256, quality: int = 80) -> bytes:
    """A JPEG thumbnail of ``image``, longest side at most ``max_side``, aspect ratio kept.

    Raises:
        InvalidInputError: ``max_side`` < 1 or ``quality`` outside 1..95.
    """
    if max_side < 1:
        raise InvalidInputError(f"max_side must be at least 1, got {max_side}")
    if not 1 <= quality <= 95:
        raise InvalidInputError(f"quality must be between 1 and 95, got {quality}")
    thumb = to_rgb(image)
    if thumb is image:
        thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()
