"""Durable file writes: a file is either its old content or its complete new content, never a mix.

Every write goes to a temporary file beside the target, is fsynced, renamed over the target, and
the folder is fsynced so that the rename itself survives a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside the folder ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic_with(path: Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` atomically with what ``write(temporary_path)`` writes (for writers that need a path)."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``."""
    write_atomic_with(path, lambda tmp: tmp.write_bytes(data))
