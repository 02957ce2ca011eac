"""Finding and reading image files: the one folder walker and the one file reader.

Plain stdlib here (decoding lives in :mod:`img_agent.embed.decode`), safe to run in threads.

* :func:`iter_image_files` walks files and folders and yields absolute, resolved image paths
  in a deterministic order, or a :class:`~img_agent.results.SkippedItem` for anything it
  cannot use (missing path, broken link, link loop, unreadable folder, a link out of the
  allowed folders). It never skips silently.
* :func:`read_file` stats, size-checks, reads and hashes a file once (:class:`RawFile`), so a
  caller can drop known content *before* the costly decode; :func:`decode_file` decodes it (and
  reads the photo's EXIF facts). :func:`read_image_file` does both.

Every reading failure is an :class:`~img_agent.errors.ImageDecodeError` whose message is a
short, specific human reason ("zero-byte file", "file too large: ...").
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from img_agent.embed.names import (
    UNSUPPORTED_IMAGE_EXTENSIONS,
    bad_name,
    printable_path,
    unsupported_reason,
    utf8_name,
)
from img_agent.errors import ImageDecodeError
from img_agent.results import FileFacts, SkippedItem

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "UNSUPPORTED_IMAGE_EXTENSIONS",
    "Confinement",
    "LoadedImage",
    "RawFile",
    "decode_file",
    "is_image_name",
    "iter_image_files",
    "open_regular",
    "printable_path",
    "read_file",
    "read_image_file",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"})
"""Suffixes (lower case, with the dot) that a folder walk treats as images; compared case-insensitively."""

@dataclass(frozen=True, slots=True)
class RawFile:
    """A file read whole and hashed, not decoded yet (``facts`` has no width, height or format)."""

    facts: FileFacts
    data: bytes


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """A decoded image file with the facts the catalog records about it."""

    image: Image.Image
    """RGB image, EXIF orientation applied; possibly draft-reduced (the facts give the full size)."""
    facts: FileFacts


# --------------------------------------------------------------------------- finding files


class Confinement(Protocol):
    """The folders a walk may enter through symbolic links (``tools.sandbox.Sandbox`` is one)."""

    def contains(self, path: Path, /) -> bool:
        """Whether an already resolved absolute path lies inside the allowed folders."""
        ...

    def describe_roots(self) -> str:
        """The allowed folders as a sentence fragment for skip reasons."""
        ...


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
    paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True, confine: Confinement | None = None
) -> Iterator[Path | SkippedItem]:
    """Yield the image files under ``paths``, absolute and resolved, each once.

    ``paths`` are handled in the order given. An explicit file is yielded whatever its
    extension (the decoder decides), except a format listed in
    :data:`UNSUPPORTED_IMAGE_EXTENSIONS`; a directory is walked depth-first in name order
    (``recursive=False``: its direct entries only), keeping files with an image extension
    (:data:`IMAGE_EXTENSIONS`) and ignoring other files. Hidden files and folders are kept.

    Anything unusable becomes a :class:`SkippedItem` and the walk goes on: a missing path, a
    broken symbolic link, a link loop (a directory reached again below itself, or a link
    chain that never ends), an unreadable directory, a special file (FIFO, device) given
    explicitly or carrying an image extension, a file of an unsupported image format (SVG:
    :data:`UNSUPPORTED_IMAGE_EXTENSIONS`, with what to do), a file or folder whose name is not
    valid UTF-8 (its path is shown with ``\\xNN`` escapes). A directory reached a second time through
    another route (not a loop) is not walked again and not reported: its files were already
    yielded. A file reached twice (two arguments, or a link to it) is yielded once.

    With ``confine``, a symbolic link (to a file or a folder) whose target lies outside
    ``confine.contains`` is skipped with a reason that names the allowed folders but not the
    target; so is an explicit path that resolves outside them.
    """
    seen_files: set[str] = set()
    walked_dirs: set[tuple[int, int]] = set()

    for raw in paths:
        given = Path(os.path.expanduser(os.fspath(raw)))
        given = given if given.is_absolute() else Path.cwd() / given
        try:
            st = os.stat(given)
        except OSError as exc:
            yield SkippedItem(path=printable_path(given), reason=_missing_reason(given, exc))
            continue
        real = _resolved(given)
        if isinstance(real, SkippedItem):
            yield real
            continue
        if not utf8_name(real):
            yield bad_name(given)
            continue
        if confine is not None and not confine.contains(real):
            yield _outside(given, "folder" if stat.S_ISDIR(st.st_mode) else "file", confine)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(
                real, st, recursive=recursive, confine=confine, seen_files=seen_files, walked_dirs=walked_dirs
            )
        elif stat.S_ISREG(st.st_mode) and unsupported_reason(real.name) is not None:
            yield SkippedItem(path=printable_path(given), reason=str(unsupported_reason(real.name)))
        elif stat.S_ISREG(st.st_mode):
            key = str(real)
            if key not in seen_files:
                seen_files.add(key)
                yield real
        else:
            yield SkippedItem(path=printable_path(given), reason="not a regular file")


def _walk(
    root: Path,
    root_stat: os.stat_result,
    *,
    recursive: bool,
    confine: Confinement | None,
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
                yield SkippedItem(path=printable_path(path), reason=_missing_reason(path, exc))
            else:
                logger.debug("ignoring unreadable non-image entry %s: %s", path, exc)
            continue

        if is_dir and st is not None:
            if not recursive:
                continue
            if is_link and confine is not None:
                refused = _confined_link(path, "folder", confine)
                if refused is not None:
                    yield refused
                    continue
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                yield SkippedItem(path=printable_path(path), reason="symbolic link loop")
                continue
            if key in walked_dirs:
                logger.debug("directory %s already walked through another route", path)
                continue
            walked_dirs.add(key)
            real = _resolved(path) if is_link else path
            if isinstance(real, SkippedItem):
                yield real
                continue
            if not utf8_name(real):  # nothing under it could be catalogued
                yield bad_name(path)
                continue
            listing = _list_dir(real)
            if isinstance(listing, SkippedItem):
                yield listing
                continue
            stack.append((real, key, iter(listing)))
            ancestors.append(key)
            continue

        if not is_image_name(entry.name):
            unsupported = unsupported_reason(entry.name) if is_reg else None
            if unsupported is not None:
                yield SkippedItem(path=printable_path(path), reason=unsupported)
            continue
        if is_link and confine is not None:
            refused = _confined_link(path, "file", confine)
            if refused is not None:
                yield refused
                continue
        if not is_reg:
            yield SkippedItem(path=printable_path(path), reason="not a regular file")
            continue
        real = _resolved(path) if is_link else path
        if isinstance(real, SkippedItem):
            yield real
            continue
        if not utf8_name(real):
            yield bad_name(path)
            continue
        key_s = str(real)
        if key_s not in seen_files:
            seen_files.add(key_s)
            yield real


def _confined_link(link: Path, kind: str, confine: Confinement) -> SkippedItem | None:
    """A skip for a symbolic link whose target is unusable or outside ``confine``; None when it may be followed."""
    target = _resolved(link)
    if isinstance(target, SkippedItem):
        return target
    return None if confine.contains(target) else _outside(link, kind, confine)


def _outside(path: Path, kind: str, confine: Confinement) -> SkippedItem:
    """The skip for ``path`` (a ``kind``) that resolves outside ``confine``; the reason never names the target."""
    where = f"outside the {confine.describe_roots()}"
    reason = f"symbolic link to a {kind} {where}" if os.path.islink(path) else where
    return SkippedItem(path=printable_path(path), reason=reason)


def _resolved(path: Path) -> Path | SkippedItem:
    """``path`` with every symbolic link resolved, or a skip saying why that failed."""
    try:
        return path.resolve(strict=True)
    except OSError as exc:
        return SkippedItem(path=printable_path(path), reason=_missing_reason(path, exc))
    except RuntimeError:  # pathlib's loop detection on Python < 3.13
        return SkippedItem(path=printable_path(path), reason="symbolic link loop")


def _list_dir(directory: Path) -> list[os.DirEntry[str]] | SkippedItem:
    """The entries of ``directory`` sorted by name, or a skip saying why it cannot be listed."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return SkippedItem(path=printable_path(directory), reason=_stat_reason(exc))


# --------------------------------------------------------------------------- reading


def open_regular(p: Path) -> int:
    """A read-only descriptor of the regular file ``p`` (non-blocking open: a FIFO cannot hang the caller)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError as exc:
        raise ImageDecodeError(_missing_reason(p, exc)) from None
    except OSError as exc:
        raise ImageDecodeError(_stat_reason(exc)) from None
    return fd


def read_file(path: str | os.PathLike[str], *, max_bytes: int) -> RawFile:
    """Read and hash one file.

    The file is opened once (non-blocking, so a FIFO cannot hang the caller), checked to be a
    regular, non-empty file of at most ``max_bytes``, read whole and hashed.

    Raises:
        ImageDecodeError: with a specific reason ("no such file or directory", "permission
            denied", "broken symbolic link", "not a regular file", "zero-byte file",
            "file too large: ...", "cannot read file: ...").
    """
    p = Path(path)
    fd = open_regular(p)
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
    facts = FileFacts(path=str(p), size=len(data), mtime=st.st_mtime, sha256=hashlib.sha256(data).hexdigest())
    return RawFile(facts=facts, data=data)


def decode_file(raw: RawFile, *, max_pixels: int, draft_size: int | None = None) -> LoadedImage:
    """Decode a file read by :func:`read_file` (see :func:`~img_agent.embed.decode.decode_image`).

    The facts get the full size, the format and the photo's EXIF facts (all None without EXIF).
    """
    from img_agent.embed.decode import decode_image

    out = decode_image(raw.data, max_pixels=max_pixels, draft_size=draft_size)
    facts = replace(raw.facts, width=out.width, height=out.height, format=out.format, photo=out.photo)
    return LoadedImage(image=out.image, facts=facts)


def read_image_file(
    path: str | os.PathLike[str], *, max_bytes: int, max_pixels: int, draft_size: int | None = None
) -> LoadedImage:
    """Read, hash and decode one image file (:func:`read_file`, then :func:`decode_file`).

    Raises:
        ImageDecodeError: the reasons of both steps ("zero-byte file", "not an image
            (unrecognised format)", "truncated or corrupt image: ...", "image too large: ...").
    """
    return decode_file(read_file(path, max_bytes=max_bytes), max_pixels=max_pixels, draft_size=draft_size)
