"""``img-agent repair``: fix what :mod:`~img_agent.index.doctor` finds, destroying nothing.

Repair holds the store's lock (the CLI stops the store's service first). It never deletes a
file: whatever it cannot use it moves into ``DATA_DIR/lost+found/<timestamp>/``, and it reports
each step. What it does, and why:

- Symbolic links among the store's files, and a lock path that is no plain file, are moved aside
  (the link itself, never its target).
- A catalog SQLite cannot read is retried without its ``-wal`` (a copy taken file by file pairs
  files from different moments); if that fails too it is treated as missing.
- A missing or empty catalog: the vectors and index files are moved aside and the store starts
  empty. The vectors are *not* turned into images of unknown path: a search hit that names no
  file can be neither shown nor opened, and its vector cannot be checked against its file; the
  honest recovery is to index the folders again (or restore the catalog from a backup: the files
  are in lost+found, untouched).
- Meta values that are no number get their true value back where the store holds it (format
  version, dimension from ``vectors.json``); an unusable main generation is forgotten, and its
  images are searched exactly until the index is rebuilt from their vectors.
- Vectors past what the catalog accounts for are copied to lost+found, then cut.
- Images whose vector is lost (a truncated file, a segment whose checksum differs, NaN or infinite
  values) cannot be re-encoded without their files: they are removed, and their paths are listed
  so the user can index them again. The checksums are then recorded as the file now is.
- Orphaned index files are moved aside.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from img_agent.errors import StoreError
from img_agent.index.catalog import FORMAT_VERSION, Catalog
from img_agent.index.doctor import META_INTS, _is_int, diagnose
from img_agent.index.integrity import (
    backfill_segments,
    check_vectors,
    file_crc,
    reseal_segments,
)
from img_agent.index.store_files import (
    CATALOG,
    HEADER,
    INDEX_DIR,
    LOCK,
    VECTORS,
    DirLock,
    linked_files,
    unaccounted_data,
)
from img_agent.index.vectors import VectorStore
from img_agent.results import RepairReport

CATALOG_FILES = (CATALOG, CATALOG + "-wal", CATALOG + "-shm")


class _Aside:
    """Moves files into one ``lost+found/<timestamp>/`` folder, created on first use."""

    def __init__(self, data_dir: Path, report: RepairReport) -> None:
        self.data_dir, self.report = data_dir, report
        self.folder = data_dir / "lost+found" / time.strftime("%Y%m%d-%H%M%S")

    def move(self, path: Path, why: str) -> None:
        if not path.exists() and not path.is_symlink():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / path.relative_to(self.data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        self.report.lost_and_found = str(self.folder)
        self.report.actions.append(f"moved {path} to {target} ({why})")


def repair(data_dir: Path) -> RepairReport:
    """Repair the store at ``data_dir`` (no other process may use it); what was done, and what is left."""
    report = RepairReport(data_dir=str(data_dir))
    aside = _Aside(data_dir, report)
    try:
        return _repair(data_dir, report, aside)
    except OSError as exc:
        raise StoreError(f"Repairing {data_dir} failed ({exc.strerror or exc}); nothing acknowledged was deleted "
                         f"(see {aside.folder}). Fix the cause, then run 'img-agent repair' again.") from exc


def _repair(data_dir: Path, report: RepairReport, aside: _Aside) -> RepairReport:
    for link in linked_files(data_dir):
        aside.move(link, "a symbolic link in the data directory")
    lock_path = data_dir / LOCK
    if lock_path.exists() and not lock_path.is_file():
        aside.move(lock_path, "not a plain file")
    lock = DirLock(data_dir)
    try:
        _fix_catalog_file(data_dir, aside)
        if unaccounted_data(data_dir):
            for name in (*CATALOG_FILES, VECTORS, HEADER):
                aside.move(data_dir / name, "no catalog accounts for it")
            for gen in sorted((data_dir / INDEX_DIR).glob("*")):
                aside.move(gen, "no catalog accounts for it")
            report.actions.append("started an empty store: index your folders again, or restore catalog.sqlite "
                                  f"and the files in {aside.folder} from a backup")
        elif (data_dir / CATALOG).exists():
            _fix_meta(data_dir, report)
            catalog = Catalog(data_dir / CATALOG)
            try:
                _fix_vectors(data_dir, catalog, report, aside)
                _fix_generations(data_dir, catalog, report, aside)
            finally:
                catalog.close()
    finally:
        lock.release()
    report.remaining = [f for f in diagnose(data_dir).findings if f.severity == "error"]
    if not report.actions:
        report.actions.append("nothing to repair")
    return report


def _readable(path: Path) -> bool:
    try:
        db = sqlite3.connect(path)
        try:
            return db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _fix_catalog_file(data_dir: Path, aside: _Aside) -> None:
    path = data_dir / CATALOG
    if not path.exists() or path.stat().st_size == 0:
        return
    scratch = Path(tempfile.mkdtemp(prefix="img-agent-repair-"))
    try:
        for name in CATALOG_FILES[:2]:
            if (data_dir / name).exists():
                shutil.copyfile(data_dir / name, scratch / name)
        if _readable(scratch / CATALOG):
            return
        aside.move(data_dir / (CATALOG + "-wal"), "catalog.sqlite cannot be read with it (a -wal from another moment)")
        aside.move(data_dir / (CATALOG + "-shm"), "belongs to the -wal moved aside")
        if not _readable(data_dir / CATALOG):
            for name in CATALOG_FILES:
                aside.move(data_dir / name, "SQLite cannot read it")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fix_meta(data_dir: Path, report: RepairReport) -> None:
    """Meta values that are no number: the true value where the store holds it, else a safe one."""
    db = sqlite3.connect(data_dir / CATALOG, isolation_level=None)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        fixes: dict[str, str | None] = {}
        for key in META_INTS:
            if key in meta and not _is_int(meta[key]):
                if key == "format_version":
                    fixes[key] = str(FORMAT_VERSION)
                elif key == "dim":
                    import json

                    fixes[key] = str(int(json.loads((data_dir / HEADER).read_text())["dim"]))
                else:
                    fixes[key] = None
        if "main_generation" in fixes:
            db.execute("UPDATE images SET state='buffer' WHERE state='main'")
            db.execute("UPDATE images SET in_main=0, in_file=0 WHERE in_main=1 OR in_file=1")
            fixes["main_generation"] = "0"
        for key, value in fixes.items():
            if value is None:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))
            report.actions.append(f"catalog meta {key}: {meta[key]!r} -> {value if value is not None else 'unset'}")
    finally:
        db.close()


def _fix_vectors(data_dir: Path, catalog: Catalog, report: RepairReport, aside: _Aside) -> None:
    dim = catalog.meta_int("dim")
    if dim is None:
        return
    path, row_bytes, next_id = data_dir / VECTORS, dim * 4, catalog.next_id()
    rows = (path.stat().st_size if path.exists() else 0) // row_bytes
    lost: list[int] = []
    if rows > max(next_id, catalog.meta_int("vector_rows_intent", 0) or 0):
        aside.folder.mkdir(parents=True, exist_ok=True)
        tail = aside.folder / "vectors-past-catalog.f32"
        with open(path, "rb") as src, open(tail, "wb") as dst:
            src.seek(next_id * row_bytes)
            shutil.copyfileobj(src, dst)
        report.lost_and_found = str(aside.folder)
        report.actions.append(f"copied vectors {next_id}..{rows - 1}, which no catalog row accounts for, to {tail}")
    elif rows < next_id:
        with open(path, "r+b") as fh:
            fh.truncate(next_id * row_bytes)  # zero rows: finite, and never searched (their images are removed)
        lost += range(rows, next_id)
        report.actions.append(f"{path} lacked the vectors of ids {rows}..{next_id - 1}; padded with zero rows")
    store = VectorStore(data_dir, committed_rows=next_id, dim=dim, intent_rows=max(rows, next_id))
    live = np.zeros(next_id, dtype=bool)
    states = catalog.state_arrays()
    live[states.buffer_ids] = True
    live[states.main_ids] = True
    check = check_vectors(catalog, store, live)
    for first, end in check.damaged:
        lost += [i for i in range(first, end) if live[i]]
        report.actions.append(f"vectors of ids {first}..{end - 1} do not match their checksum")
    lost += check.nonfinite
    if check.nonfinite:
        report.actions.append(f"{len(check.nonfinite)} vectors hold NaN or infinite values")
    gone = [i for i in sorted(set(lost)) if i < len(live) and live[i]]
    if gone:
        records = catalog.records(gone)
        catalog.mark_deleted(gone)
        report.removed_ids = gone
        report.reindex = sorted({r.path for r in records.values()})
        report.actions.append(f"removed {len(gone)} images whose vector was lost; index their files again "
                              "(listed under reindex)")
    reseal = check.damaged + ([(rows, next_id)] if rows < next_id else [])
    reseal_segments(catalog, store, reseal)
    if check.unchecked_from is not None:
        backfill_segments(catalog, store, check.unchecked_from)


def _fix_generations(data_dir: Path, catalog: Catalog, report: RepairReport, aside: _Aside) -> None:
    generation = catalog.meta_int("main_generation", 0) or 0
    current = data_dir / INDEX_DIR / f"gen-{generation:06d}.faiss"
    expected = catalog.meta_int("main_crc")
    if generation and (not current.exists() or (expected is not None and file_crc(current) != expected)):
        aside.move(current, "missing or damaged main index; rebuilt from the vectors at next open")
        catalog.reset_main()
        report.actions.append("forgot the damaged main index: its images are searched exactly until "
                              "'img-agent rebuild' (or the next open) builds a new one")
        current = None
    for path in sorted((data_dir / INDEX_DIR).glob("*")) if (data_dir / INDEX_DIR).is_dir() else []:
        if path != current:
            aside.move(path, "an index file of no current generation")
