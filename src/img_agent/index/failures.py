"""Low-level failures of the store's files as the errors img-agent raises, each saying what to do.

SQLite and the operating system report a full disk, a read-only file system or a damaged file in
their own terms (``sqlite3.OperationalError: database or disk is full``, ``OSError(ENOSPC)``); the
store turns them into :class:`~img_agent.errors.StoreWriteError`,
:class:`~img_agent.errors.StoreReadOnlyError` or :class:`~img_agent.errors.StoreCorruptError` here,
in one place, so no caller sees a raw database or OS error.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from img_agent.errors import (
    StoreCorruptError,
    StoreError,
    StoreInUseError,
    StoreReadOnlyError,
    StoreWriteError,
)

DIAGNOSE = "Run 'img-agent doctor' to see what is wrong and 'img-agent repair' to fix what can be fixed"

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_full(where: Path) -> StoreWriteError:
    return StoreWriteError(
        f"Writing the store at {where} failed: the disk is full (or a size quota was reached). Everything "
        "committed before is kept. Free some space on that disk, then run the command again."
    )


def read_only(where: Path) -> StoreReadOnlyError:
    return StoreReadOnlyError(
        f"The store at {where} is read-only (a read-only mount or no write permission): searching works, changes "
        "do not. Remount it read-write or give yourself write permission, or copy it with 'img-agent backup DEST' "
        "and change the copy."
    )


def os_error(exc: OSError, where: Path) -> StoreError:
    """The store error for an OS error met while writing the store at ``where``."""
    if exc.errno in _FULL:
        return disk_full(where)
    if exc.errno in _READ_ONLY:
        return read_only(where)
    return StoreWriteError(
        f"Writing the store at {where} failed ({exc.strerror or exc}). Everything committed before is kept. Check "
        f"the disk (dmesg, df), then run the command again. {DIAGNOSE}."
    )


def sqlite_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """The store error for an SQLite error on the catalog at ``path``."""
    text = str(exc).lower()
    where = path.parent
    if "disk is full" in text or "database or disk is full" in text:
        return disk_full(where)
    if "readonly" in text or "read-only" in text:
        return read_only(where)
    if "locked" in text or "busy" in text:
        return StoreInUseError(
            f"The catalog {path} is locked by another process. Stop other programs that use this store "
            "('img-agent service stop'), then run the command again."
        )
    if isinstance(exc, sqlite3.OperationalError) and ("i/o" in text or "disk" in text):
        return StoreWriteError(
            f"Reading or writing the catalog {path} failed ({exc}). Everything committed before is kept. Check the "
            f"disk (dmesg, df), then run the command again. {DIAGNOSE}."
        )
    return StoreCorruptError(
        f"The catalog {path} is damaged or inconsistent ({exc}); this happens when a store is copied file by file "
        f"while img-agent writes it (copy stores with 'img-agent backup DEST'). {DIAGNOSE}, or restore the data "
        "directory from a backup."
    )
