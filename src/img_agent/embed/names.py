"""File names a folder walk cannot index, and paths shown as valid text.

A file of an image format this build cannot decode (SVG) and a name that is not valid UTF-8
(the catalog, JSON and every client need text paths) are reported as skipped with what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from img_agent.results import SkippedItem

UNSUPPORTED_IMAGE_EXTENSIONS: dict[str, str] = {
    ".svg": "SVG is a vector format: convert it to PNG to index it",
    ".svgz": "SVG is a vector format: convert it to PNG to index it",
}
"""Image formats a folder walk reports as skipped (with what to do) instead of passing over them."""

NON_UTF8_NAME_REASON = "the file name is not valid UTF-8: rename it (e.g. with convmv) to index it"


def unsupported_reason(name: str) -> str | None:
    """Why a file with an image format's suffix that cannot be indexed is skipped, or None."""
    return UNSUPPORTED_IMAGE_EXTENSIONS.get(os.path.splitext(name)[1].lower())


def utf8_name(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 (the catalog, JSON and every client need text paths)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid text: bytes that are not UTF-8 are shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def bad_name(path: Path) -> SkippedItem:
    return SkippedItem(path=printable_path(path), reason=NON_UTF8_NAME_REASON)
