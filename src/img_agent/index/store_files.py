"""Opening a data directory: its safety checks, its lock, read-only detection, and the catalog and vectors.

Opening never destroys data the catalog does not account for: a store whose ``catalog.sqlite`` is
missing or empty while vectors or index files exist is refused (``img-agent repair`` sets those
files aside), and rows past the catalog's last id are cut only within the bound the catalog
recorded before the append that left them (see :mod:`~img_agent.index.vectors`).

Trust: files are opened without following symbolic links, and a data directory that other users
may write (group- or world-writable without the sticky bit, unless the group is the owner's own
private group) is refused, since they could plant files there.

A store that cannot be written (a read-only mount, no write permission) opens read-only: no lock
file is written, SQLite opens in ``mode=ro``, nothing is truncated, checkpointed or cleaned up,
and every change raises :class:`~img_agent.errors.StoreReadOnlyError`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from img_agent.config import Settings
from img_agent.errors import StoreCorruptError, StoreError, StoreInUseError
from img_agent.index.catalog import Catalog
from img_agent.index.failures import DIAGNOSE
from img_agent.index.integrity import check_integrity, verify_on_open
from img_agent.index.vectors import VectorStore

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder

log = logging.getLogger(__name__)

CATALOG, VECTORS, HEADER, LOCK, INDEX_DIR = "catalog.sqlite", "vectors.f32", "vectors.json", "lock", "index"
STORE_FILES = (CATALOG, CATALOG + "-wal", CATALOG + "-shm", VECTORS, HEADER, LOCK, INDEX_DIR)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def unsafe_folder(folder: Path) -> str | None:
    """Why other users could change files in ``folder`` (None: only its owner can)."""
    if sys.platform == "win32":
        return None
    st = os.stat(folder)
    if st.st_mode & stat.S_ISVTX:
        return None
    if st.st_mode & stat.S_IWOTH:
        return f"{folder} is writable by every user"
    if st.st_mode & stat.S_IWGRP and not _private_group(st.st_uid, st.st_gid):
        return f"{folder} is writable by its group (gid {st.st_gid})"
    return None


def _private_group(uid: int, gid: int) -> bool:
    """Whether ``gid`` is the user-private group of ``uid`` (named like the user, no other members)."""
    try:
        import grp
        import pwd

        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return user.pw_gid == gid and group.gr_name == user.pw_name and not set(group.gr_mem) - {user.pw_name}


def linked_files(folder: Path) -> list[Path]:
    """Store files in ``folder`` that are symbolic links (never followed)."""
    return [folder / name for name in STORE_FILES if (folder / name).is_symlink()]


class DirLock:
    """An exclusive lock on the data directory for the life of the engine (one writer process).

    Raises :class:`PermissionError`/:class:`OSError` with a read-only errno when the lock file cannot
    be written: the caller then opens the store read-only.
    """

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or self.path.is_symlink():
                raise StoreCorruptError(
                    f"{self.path} is not a plain file (a symbolic link or a folder stands there); img-agent does not "
                    f"follow it. Move it away (mv {self.path} {self.path}.bad) or run 'img-agent repair'."
                ) from None
            raise
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise StoreCorruptError(f"{self.path} is not a plain file. Move it away (mv {self.path} {self.path}.bad).")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, single-process use is on the user
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
            os.close(self._fd)
            self._fd = -1
            pid = int(holder) if holder.isdigit() else None
            raise StoreInUseError(
                f"The data directory {folder} is in use by another img-agent process (pid {holder or 'unknown'}), "
                "normally the store's service: the CLI and img_agent.connect() go through it. Stop it with "
                "'img-agent service stop', or point --data-dir / IMG_AGENT_DATA_DIR at another folder.",
                pid,
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class NoLock:
    """What a read-only store holds instead of a lock (it writes nothing, so it excludes nobody)."""

    def release(self) -> None:
        return None


@dataclass
class Opened:
    """The parts of an open store (see :func:`open_store`)."""

    catalog: Catalog
    vectors: VectorStore
    lock: DirLock | NoLock
    model: str
    pretrained: str
    read_only: bool
    notices: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.catalog.close()
        self.lock.release()


def lock_store(data_dir: Path) -> tuple[DirLock | NoLock, bool]:
    """The store's lock, and whether the store is read-only (then no lock is held)."""
    try:
        return DirLock(data_dir), False
    except OSError as exc:
        if exc.errno in _READ_ONLY_ERRNOS:
            return NoLock(), True
        raise StoreError(f"Cannot use the lock file {data_dir / LOCK} ({exc.strerror or exc}). {DIAGNOSE}.") from exc


def check_folder(data_dir: Path) -> None:
    """Refuse a data directory that others may write, or whose store files are symbolic links."""
    why = unsafe_folder(data_dir)
    if why:
        raise StoreError(
            f"{why}, so other users could change or replace the store's files. Close it with 'chmod go-w {data_dir}' "
            "(or add the sticky bit), then run the command again."
        )
    links = linked_files(data_dir)
    if links:
        raise StoreCorruptError(
            f"{', '.join(map(str, links))} {'is a symbolic link' if len(links) == 1 else 'are symbolic links'}; "
            f"img-agent does not follow links inside a data directory. {DIAGNOSE} (it moves them to lost+found)."
        )


def unaccounted_data(data_dir: Path) -> list[str]:
    """Vector and index files present while the catalog is missing or empty (opening would orphan them)."""
    catalog = data_dir / CATALOG
    if catalog.exists() and catalog.stat().st_size > 0:
        return []
    found = []
    vectors = data_dir / VECTORS
    if vectors.exists() and vectors.stat().st_size > 0:
        found.append(f"{vectors} ({vectors.stat().st_size:,} bytes of vectors)")
    found += [str(p) for p in sorted((data_dir / INDEX_DIR).glob("gen-*.faiss"))]
    return found


def open_store(settings: Settings, encoder: ClipEncoder | None) -> Opened:
    """Check, lock and open the store in ``settings.data_dir`` (created when absent)."""
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create the data directory {data_dir} ({exc}). Choose another with --data-dir.") from exc
    check_folder(data_dir)
    lock, read_only = lock_store(data_dir)
    try:
        notices = []
        if read_only:
            notices.append(f"The store at {data_dir} is read-only (read-only mount or no write permission): searches "
                           "work, changes (index, remove, merge, rebuild) do not.")
            log.warning("%s", notices[-1])
        else:
            (data_dir / INDEX_DIR).mkdir(exist_ok=True)
        orphaned = unaccounted_data(data_dir)
        if orphaned:
            raise StoreCorruptError(
                f"{data_dir / CATALOG} is missing or empty, but the store holds data it would account for: "
                f"{'; '.join(orphaned)}. Nothing was changed. Restore catalog.sqlite from a backup, or run "
                "'img-agent doctor' to see what is there and 'img-agent repair' to move these files to lost+found "
                "and start an empty store (then index your folders again)."
            )
        catalog = Catalog(data_dir / CATALOG, read_only=read_only)
        try:
            if catalog.immutable:
                notices.append("The catalog is read as its main file only: changes still in catalog.sqlite-wal "
                               "are not seen until the store is opened writable once.")
            model, pretrained = resolve_model(settings, catalog.meta(), encoder)
            catalog.bind_model(model, pretrained, encoder.dim if encoder is not None else None)
            vectors = VectorStore(data_dir, committed_rows=catalog.next_id(), dim=catalog.meta_int("dim"),
                                  read_only=read_only, intent_rows=catalog.meta_int("vector_rows_intent"))
            check_integrity(catalog, vectors.rows)
            states = catalog.state_arrays()
            live = np.zeros(states.next_id, dtype=bool)
            live[states.buffer_ids] = True
            live[states.main_ids] = True
            verify_on_open(catalog, vectors, live)
        except BaseException:
            catalog.close()
            raise
        return Opened(catalog, vectors, lock, model, pretrained, read_only, notices)
    except BaseException:
        lock.release()
        raise


def resolve_model(settings: Settings, meta: dict[str, str], encoder: ClipEncoder | None) -> tuple[str, str]:
    """The model of this store: an existing store's own unless the user asked for one explicitly."""
    if encoder is not None:
        return encoder.name, encoder.pretrained
    explicit = settings.model_fields_set
    if "model" in meta and "model" not in explicit:
        return meta["model"], meta["pretrained"]
    if "model" in meta and meta["model"] == settings.model and "pretrained" not in explicit:
        return meta["model"], meta["pretrained"]
    from img_agent.embed.weights import weights_label

    return settings.model, weights_label(settings.model, settings.pretrained)
