"""Thumbnails on disk, named by content hash and size, sent with an ETag.

A cached thumbnail is served only after the image's file is checked against the caller's allowed
folders again (:meth:`~img_agent.tools.sandbox.Sandbox.resolve`), so a cache never shows an image the
folders no longer allow. Files are written to a temporary name and renamed, so a reader never sees
half a JPEG.

The cache is bounded (``Settings.thumb_cache_mb``): a hit touches its file, and a write that takes
the folder over the limit removes the least recently used files (oldest mtime first) down to
:data:`EVICT_TO` of it. A removal that fails, or races another, only leaves the cache larger for a
while; it never fails a request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from img_agent.errors import AccessDeniedError, NotFoundError

if TYPE_CHECKING:
    from img_agent.results import ImageRecord
    from img_agent.tools.image_tools import ImageTools

MIN_SIDE, DEFAULT_SIDE, MAX_SIDE = 32, 256, 1024
CACHE_CONTROL = "private, max-age=86400"
EVICT_TO = 0.9
"""Fraction of the limit an eviction leaves the cache at, so that not every write evicts."""
STALE_TMP_S = 600.0
"""Age after which a temporary file is a leftover of a failed write, not one in progress."""
MIB = 1024 * 1024
_HEX = re.compile(r"^[0-9a-f]{16,128}$")

log = logging.getLogger(__name__)


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
    """JPEG thumbnails in ``folder`` (created on first use), keyed by content hash and size.

    Args:
        folder: where the thumbnails are kept.
        limit_mb: most MiB kept on disk (0: none is kept); ``None`` reads ``thumb_cache_mb`` from the
            settings of the engine a request's tools use.
    """

    def __init__(self, folder: Path, limit_mb: float | None = None) -> None:
        self.folder = folder
        self.limit_mb = limit_mb
        self._lock = threading.Lock()
        self._bytes: int | None = None  # the folder's size as this process last counted it, plus its writes

    def _path(self, record: ImageRecord, size: int) -> Path | None:
        digest = (record.sha256 or "").lower()
        return self.folder / f"{digest}-{size}.jpg" if _HEX.match(digest) else None

    def _limit(self, tools: ImageTools) -> int:
        limit_mb = self.limit_mb if self.limit_mb is not None else tools.engine.settings.thumb_cache_mb
        return int(limit_mb * MIB)

    def get(self, tools: ImageTools, record: ImageRecord, size: int) -> bytes:
        """The thumbnail of ``record`` (checked by :func:`checked_record`), from the cache or made now."""
        limit = self._limit(tools)
        path = self._path(record, size) if limit > 0 else None
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError:
                pass  # not cached (or evicted meanwhile): made below
            else:
                with contextlib.suppress(OSError):
                    os.utime(path)  # recently used: evicted last
                return data
        data = tools.thumbnail(record.id, max_side=size)
        if path is not None and self._store(path, data):
            self._account(len(data), limit)
        return data

    def _store(self, path: Path, data: bytes) -> bool:
        """Write ``path`` atomically; a cache that cannot be written is only slower."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        except OSError:
            return False
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        return True

    def _account(self, written: int, limit: int) -> None:
        """Count ``written`` bytes in, and evict when the cache is over ``limit``."""
        with self._lock:
            if self._bytes is not None:
                self._bytes += written
                if self._bytes <= limit:
                    return
            try:
                self._bytes = self._evict(limit)
            except OSError as exc:
                self._bytes = None  # count the folder again at the next write
                log.warning("could not trim the thumbnail cache %s (%s); it stays larger for now", self.folder, exc)

    def _evict(self, limit: int) -> int:
        """Remove the least recently used files until the folder holds at most ``EVICT_TO * limit``
        bytes (nothing when it holds at most ``limit``); returns the bytes left."""
        files: list[tuple[float, int, str]] = []
        now = time.time()
        with os.scandir(self.folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # removed meanwhile
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    stat = entry.stat(follow_symlinks=False)
                    if entry.name.endswith(".jpg") or now - stat.st_mtime > STALE_TMP_S:
                        files.append((stat.st_mtime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        if total <= limit:
            return total
        target = int(limit * EVICT_TO)
        failed: OSError | None = None
        for _, size, file in sorted(files):
            if total <= target:
                break
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass  # another eviction was first
            except OSError as exc:
                failed = exc
                continue
            total -= size
        if failed is not None:
            log.warning("could not remove every old thumbnail from %s (%s); the cache holds %d bytes", self.folder,
                        failed, total)
        return total
