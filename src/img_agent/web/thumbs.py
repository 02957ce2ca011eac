"""Thumbnails on disk, named by content hash and size, sent with an ETag.

A cached thumbnail is served only after the image's file is checked against the caller's allowed
folders again (:meth:`~img_agent.tools.sandbox.Sandbox.resolve`), so a cache never shows an image the
folders no longer allow. Files are written to a temporary name and renamed, so a reader never sees
half a JPEG.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from img_agent.errors import AccessDeniedError, NotFoundError

if TYPE_CHECKING:
    from img_agent.results import ImageRecord
    from img_agent.tools.image_tools import ImageTools

MIN_SIDE, DEFAULT_SIDE, MAX_SIDE = 32, 256, 1024
CACHE_CONTROL = "private, max-age=86400"
_HEX = re.compile(r"^[0-9a-f]{16,128}$")


def etag(record: ImageRecord, size: int) -> str:
    return f'"{record.sha256}-{size}"'


def etag_matches(header: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names ``tag`` (or ``*``)."""
    if not header:
        return False
    given = [part.strip().removeprefix("W/") for part in header.split(",")]
    return "*" in given or tag in given


def checked_record(tools: ImageTools, image_id: int) -> ImageRecord:
    """The live image ``image_id`` whose file is inside the tools' allowed folders, now.

    Raises:
        NotFoundError: no live image has that id, or its file is gone.
        AccessDeniedError: its file lies (or now resolves) outside the allowed folders.
    """
    [record] = tools.engine.get([image_id])
    try:
        tools.sandbox.resolve(record.path)
    except AccessDeniedError:
        raise AccessDeniedError(f"Image {image_id} is outside the {tools.sandbox.describe_roots()}, so it is not "
                                "shown; add its folder to IMG_AGENT_IMAGE_ROOTS to see it.") from None
    except NotFoundError:
        raise NotFoundError(f"Image {image_id}'s file {record.path} is gone; re-index its folder with prune, "
                            "or remove the image.") from None
    return record


class ThumbnailCache:
    """JPEG thumbnails in ``folder`` (created on first use), keyed by content hash and size."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, record: ImageRecord, size: int) -> Path | None:
        digest = (record.sha256 or "").lower()
        return self.folder / f"{digest}-{size}.jpg" if _HEX.match(digest) else None

    def get(self, tools: ImageTools, record: ImageRecord, size: int) -> bytes:
        """The thumbnail of ``record`` (checked by :func:`checked_record`), from the cache or made now."""
        path = self._path(record, size)
        if path is not None:
            with contextlib.suppress(OSError):
                return path.read_bytes()
        data = tools.thumbnail(record.id, max_side=size)
        if path is not None:
            self._store(path, data)
        return data

    def _store(self, path: Path, data: bytes) -> None:
        """Write ``path`` atomically; a cache that cannot be written is only slower."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
