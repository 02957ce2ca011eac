"""Finding, reading and decoding image files: the untrusted-input side of indexing.

Everything here is plain Pillow + numpy + stdlib (no torch), so it is cheap to import and
safe to run in decode threads.

* :func:`iter_image_files` walks files and folders and yields absolute, resolved image paths
  in a deterministic order, or a :class:`~img_agent.results.SkippedItem` for anything it
  cannot use (missing path, broken link, link loop, unreadable folder). It never skips silently.
* :func:`read_image_file` stats, size-checks, reads and hashes a file once, lets the caller
  drop known content (:class:`DuplicateContent`) *before* the costly decode, then decodes it.
* :func:`decode_image_bytes` turns bytes into an RGB image with a decompression-bomb guard,
  truncation detection, JPEG draft decoding, EXIF orientation and proper mode conversion.
* :func:`make_thumbnail` renders a small JPEG.

Every failure is an :class:`~img_agent.errors.ImageDecodeError` whose message is a short,
specific human reason ("zero-byte file", "truncated or corrupt image: ...").
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.results import SkippedItem

__all__ = [
    "IMAGE_EXTENSIONS",
    "DuplicateContent",
    "DuplicateItem",
    "LoadedImage",
    "decode_image_bytes",
    "is_image_name",
    "iter_image_files",
    "make_thumbnail",
    "read_image_file",
    "to_rgb",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
"""Suffixes (lower case, with the dot) that a folder walk treats as images; compared case-insensitively."""

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


class DuplicateContent(Exception):
    """Control-flow signal from :func:`read_image_file`: the file's content is already indexed.

    Raised before decoding, when the caller's ``known_hash(sha256)`` returns true. Not an
    error: callers count such files as unchanged.
    """

    def __init__(self, sha256: str) -> None:
        super().__init__(f"content already indexed (sha256 {sha256})")
        self.sha256 = sha256


class DuplicateItem(SkippedItem):
    """A :class:`SkippedItem` for a file whose content is already indexed (see :class:`DuplicateContent`).

    Its ``reason`` starts with ``"duplicate"``; ``isinstance(item, DuplicateItem)`` is the way to
    tell it from a real failure. Serialised as a plain ``SkippedItem`` in reports.
    """

    sha256: str

    @classmethod
    def from_signal(cls, path: str, signal: DuplicateContent) -> DuplicateItem:
        reason = f"duplicate: content already indexed (sha256 {signal.sha256[:16]})"
        return cls(path=path, reason=reason, sha256=signal.sha256)


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """A decoded image file with the facts the catalog records about it."""

    image: Image.Image
    """RGB image, EXIF orientation applied; possibly draft-reduced (see ``draft_size``)."""
    sha256: str
    """Hex SHA-256 of the file bytes."""
    size: int
    """File size in bytes (the bytes that were hashed)."""
    width: int
    """Full pixel width after EXIF orientation (not the draft-reduced width)."""
    height: int
    """Full pixel height after EXIF orientation (not the draft-reduced height)."""
    format: str
    """Pillow format name, e.g. ``"JPEG"``, ``"PNG"``."""
    mtime: float
    """File modification time (Unix seconds)."""


# --------------------------------------------------------------------------- finding files


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _stat_reason(exc: OSError) -> str:
    """A short human reason for a failed stat/scandir/open."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    if exc.errno == errno.ENOTDIR:
        return "not a directory"
    return exc.strerror or type(exc).__name__


def _missing_reason(path: Path, exc: OSError) -> str:
    """Reason for a path whose ``stat`` (following links) failed: tells broken links from missing paths."""
    if exc.errno == errno.ENOENT:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return "broken symbolic link"
        except OSError:
            pass
    return _stat_reason(exc)


def iter_image_files(
    paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True
) -> Iterator[Path | SkippedItem]:
    """Yield the image files under ``paths``, absolute and resolved, each once.

    ``paths`` are handled in the order given. An explicit file is yielded whatever its
    extension (the decoder decides); a directory is walked depth-first in name order
    (``recursive=False``: its direct entries only), keeping files with an image extension
    (:data:`IMAGE_EXTENSIONS`) and ignoring other files. Hidden files and folders are kept.

    Anything unusable becomes a :class:`SkippedItem` and the walk goes on: a missing path, a
    broken symbolic link, a link loop (a directory reached again below itself, or a link
    chain that never ends), an unreadable directory, a special file (FIFO, device) given
    explicitly or carrying an image extension. A directory reached a second time through
    another route (not a loop) is not walked again and not reported: its files were already
    yielded. A file reached twice (two arguments, or a link to it) is yielded once.
    """
    seen_files: set[str] = set()
    walked_dirs: set[tuple[int, int]] = set()

    for raw in paths:
        given = Path(os.path.expanduser(os.fspath(raw)))
        given = given if given.is_absolute() else Path.cwd() / given
        try:
            st = os.stat(given)
        except OSError as exc:
            yield SkippedItem(path=str(given), reason=_missing_reason(given, exc))
            continue
        real = _resolved(given)
        if isinstance(real, SkippedItem):
            yield real
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(real, st, recursive=recursive, seen_files=seen_files, walked_dirs=walked_dirs)
        elif stat.S_ISREG(st.st_mode):
            key = str(real)
            if key not in seen_files:
                seen_files.add(key)
                yield real
        else:
            yield SkippedItem(path=str(given), reason="not a regular file")


def _walk(
    root: Path,
    root_stat: os.stat_result,
    *,
    recursive: bool,
    seen_files: set[str],
    walked_dirs: set[tuple[int, int]],
) -> Iterator[Path | SkippedItem]:
    """Depth-first, name-ordered walk of one directory (iterative: deep trees cannot overflow the stack)."""
    root_key = (root_stat.st_dev, root_stat.st_ino)
    if root_key in walked_dirs:
        logger.debug("directory %s already walked; not walking it again", root)
        return
    walked_dirs.add(root_key)
    # Each frame: (directory path, its (dev, ino), iterator over its sorted entries).
    stack: list[tuple[Path, tuple[int, int], Iterator[os.DirEntry[str]]]] = []
    listing = _list_dir(root)
    if isinstance(listing, SkippedItem):
        yield listing
        return
    stack.append((root, root_key, iter(listing)))
    ancestors: list[tuple[int, int]] = [root_key]

    while stack:
        directory, _, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            ancestors.pop()
            continue
        path = directory / entry.name
        try:
            is_link = entry.is_symlink()
            if is_link:
                st: os.stat_result | None = os.stat(path)  # follows the link
                is_dir, is_reg = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
            else:
                # d_type from the directory listing: no stat call per file (matters at 1M files).
                is_dir, is_reg = entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False)
                st = entry.stat(follow_symlinks=False) if is_dir else None
        except OSError as exc:
            name_suffix = os.path.splitext(entry.name)[1]
            if is_image_name(entry.name) or not name_suffix:  # an image, or maybe a folder
                yield SkippedItem(path=str(path), reason=_missing_reason(path, exc))
            else:
                logger.debug("ignoring unreadable non-image entry %s: %s", path, exc)
            continue

        if is_dir and st is not None:
            if not recursive:
                continue
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                yield SkippedItem(path=str(path), reason="symbolic link loop")
                continue
            if key in walked_dirs:
                logger.debug("directory %s already walked through another route", path)
                continue
            walked_dirs.add(key)
            real = _resolved(path) if is_link else path
            if isinstance(real, SkippedItem):
                yield real
                continue
            listing = _list_dir(real)
            if isinstance(listing, SkippedItem):
                yield listing
                continue
            stack.append((real, key, iter(listing)))
            ancestors.append(key)
            continue

        if not is_image_name(entry.name):
            continue
        if not is_reg:
            yield SkippedItem(path=str(path), reason="not a regular file")
            continue
        real = _resolved(path) if is_link else path
        if isinstance(real, SkippedItem):
            yield real
            continue
        key_s = str(real)
        if key_s not in seen_files:
            seen_files.add(key_s)
            yield real


def _resolved(path: Path) -> Path | SkippedItem:
    """``path`` with every symbolic link resolved, or a skip saying why that failed."""
    try:
        return path.resolve(strict=True)
    except OSError as exc:
        return SkippedItem(path=str(path), reason=_missing_reason(path, exc))
    except RuntimeError:  # pathlib's loop detection on Python < 3.13
        return SkippedItem(path=str(path), reason="symbolic link loop")


def _list_dir(directory: Path) -> list[os.DirEntry[str]] | SkippedItem:
    """The entries of ``directory`` sorted by name, or a skip saying why it cannot be listed."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return SkippedItem(path=str(directory), reason=_stat_reason(exc))


# --------------------------------------------------------------------------- reading + decoding


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    max_pixels: int,
    draft_size: int | None = None,
    known_hash: Callable[[str], bool] | None = None,
) -> LoadedImage:
    """Read, hash and decode one image file.

    The file is opened once (non-blocking, so a FIFO cannot hang the caller), checked to be a
    regular, non-empty file of at most ``max_bytes``, read whole and hashed. If
    ``known_hash(sha256)`` is true, :class:`DuplicateContent` is raised before any decoding.
    Otherwise the bytes are decoded by :func:`decode_image_bytes`.

    Raises:
        ImageDecodeError: with a specific reason ("file not found", "permission denied",
            "zero-byte file", "file too large: ...", "not an image (unrecognised format)",
            "truncated or corrupt image: ...", "image too large: ...").
        DuplicateContent: the content is already known.
    """
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError as exc:
        raise ImageDecodeError(_missing_reason(p, exc)) from None
    except OSError as exc:
        raise ImageDecodeError(_stat_reason(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError("not a regular file")
        if st.st_size == 0:
            raise ImageDecodeError("zero-byte file")
        if st.st_size > max_bytes:
            raise ImageDecodeError(f"file too large: {st.st_size} bytes exceeds max_file_bytes={max_bytes}")
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # owned by fh now
            data = fh.read(max_bytes + 1)  # the file may grow between fstat and read
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {_stat_reason(exc)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if not data:
        raise ImageDecodeError("zero-byte file")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"file too large: more than {max_bytes} bytes (max_file_bytes={max_bytes})")

    sha256 = hashlib.sha256(data).hexdigest()
    if known_hash is not None and known_hash(sha256):
        raise DuplicateContent(sha256)
    image, fmt, width, height = decode_image_bytes(data, max_pixels=max_pixels, draft_size=draft_size)
    return LoadedImage(
        image=image, sha256=sha256, size=len(data), width=width, height=height, format=fmt, mtime=st.st_mtime
    )


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


def decode_image_bytes(
    data: bytes, *, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image, str, int, int]:
    """Decode image bytes into ``(rgb_image, format, width, height)``.

    * The pixel count from the header is checked against ``max_pixels`` before any pixel is
      decoded (decompression-bomb guard); Pillow's own bomb error becomes an ImageDecodeError too.
    * With ``draft_size``, JPEGs decode at a reduced DCT scale whose short side stays
      ``>= draft_size`` (several times faster for photos), and other formats larger than twice
      that are box-reduced after decoding by an integer factor keeping the short side
      ``>= draft_size``. Pass the model's input size.
    * The image is fully loaded here, so truncated files fail now, not later
      (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone).
    * EXIF orientation is applied; animated images give their first frame; every mode is
      converted to RGB properly (see :func:`to_rgb`).

    ``width`` and ``height`` are the full-resolution size after EXIF orientation, whatever
    draft reduction was used.
    """
    if not data:
        raise ImageDecodeError("zero-byte file")
    _silence_pil_bomb_warning()
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except _PIL_DECODE_ERRORS as exc:
        raise ImageDecodeError(f"truncated or corrupt image: {_describe(exc)}") from None

    try:
        fmt = img.format or "unknown"
        full_w, full_h = img.size
        if full_w <= 0 or full_h <= 0:
            raise ImageDecodeError(f"truncated or corrupt image: invalid size {full_w}x{full_h}")
        if full_w * full_h > max_pixels:
            raise ImageDecodeError(f"image too large: {full_w}x{full_h} pixels exceeds max_image_pixels={max_pixels}")
        orientation = _exif_orientation(img)
        if orientation in _SWAPPING_ORIENTATIONS:
            full_w, full_h = full_h, full_w

        try:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if draft_size is not None and fmt in _DRAFT_FORMATS:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"image too large: {exc}") from None
        except MemoryError:
            raise ImageDecodeError(f"image too large: out of memory decoding {full_w}x{full_h} pixels") from None
        except _PIL_DECODE_ERRORS as exc:
            raise ImageDecodeError(f"truncated or corrupt image: {_describe(exc)}") from None

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
    return rgb, fmt, full_w, full_h


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
