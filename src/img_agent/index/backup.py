"""A consistent copy of an open store, taken while adds wait: ``img-agent backup DEST``.

Copying a data directory file by file while img-agent writes it can pair a catalog with a
``-wal`` from another moment, which SQLite then reads as damage. A backup instead holds the
store's write lock (adds, removes and index switches wait; searches go on) and copies:

- the catalog through SQLite's online backup API (one consistent snapshot, WAL included),
- the committed rows of ``vectors.f32`` (rows an unfinished add appended are left out),
- ``vectors.json`` and the current main index generation file.

Every file is fsynced; the copy is a data directory that opens on its own. The copy of a store kept
in Milvus is a faiss store (its images back in the exact buffer, indexed at the first merge): it must
not write into the collection its original serves. ``img-agent migrate --to URI`` puts it in Milvus.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from img_agent.errors import InvalidInputError
from img_agent.index.durable import fsync_dir
from img_agent.index.failures import os_error
from img_agent.index.state import State
from img_agent.index.store_files import CATALOG, HEADER, INDEX_DIR, VECTORS
from img_agent.results import BackupReport

_CHUNK = 1 << 24


def backup_store(state: State, dest: Path) -> BackupReport:
    """Copy the store of ``state`` into ``dest`` (a new or empty folder)."""
    source = state.settings.data_dir
    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInputError(f"The backup folder {dest} exists and is not empty; give a new folder.")
    if dest.resolve() == source.resolve() or source.resolve() in dest.resolve().parents:
        raise InvalidInputError(f"The backup folder {dest} lies inside the store {source}; give a folder outside it.")
    t0 = time.perf_counter()
    try:
        (dest / INDEX_DIR).mkdir(parents=True, exist_ok=True)
        with state.write_lock:
            rows = state.catalog.next_id()
            generation = state.catalog.meta_int("main_generation", 0) or 0
            live = state.view.n_live
            state.catalog.backup_to(dest / CATALOG)
            if state.external is not None:
                _detach(dest / CATALOG)
            written = (dest / CATALOG).stat().st_size
            written += _copy(source / VECTORS, dest / VECTORS, rows * state.vectors.row_bytes)
            if (source / HEADER).exists():
                written += _copy(source / HEADER, dest / HEADER, None)
            if generation:
                gen = state.gen_path(generation)
                written += _copy(gen, dest / INDEX_DIR / gen.name, None)
        _fsync(dest / CATALOG)
        fsync_dir(dest / INDEX_DIR)
        fsync_dir(dest)
    except OSError as exc:
        raise os_error(exc, dest) from exc
    return BackupReport(dest=str(dest), images=live, rows=rows, generation=generation, bytes=written,
                        seconds=round(time.perf_counter() - t0, 3))


def _detach(catalog: Path) -> None:
    """Make the copied catalog of a Milvus-backed store a faiss store of its own (a new store id, no collection)."""
    import sqlite3

    db = sqlite3.connect(catalog)
    try:
        with db:
            db.execute("DELETE FROM meta WHERE key IN ('vector_store', 'store_id', 'milvus_synced', 'migrate_progress')")
    finally:
        db.close()


def _copy(src: Path, dst: Path, length: int | None) -> int:
    """Copy ``length`` bytes (all when None) of ``src`` to a new ``dst``, fsynced; the bytes copied."""
    if length is None and not src.exists():
        return 0
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(src, flags) if src.exists() else None
    copied = 0
    with open(dst, "xb") as out:
        if fd is not None:
            with os.fdopen(fd, "rb") as inp:
                if length is None:
                    shutil.copyfileobj(inp, out, _CHUNK)
                else:
                    while copied < length:
                        chunk = inp.read(min(_CHUNK, length - copied))
                        if not chunk:
                            break
                        out.write(chunk)
                        copied += len(chunk)
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
