"""``img-agent doctor``: a read-only diagnosis of a data directory, file by file.

It checks the folder's permissions and links, the lock file, the catalog (SQLite's own check, the
format and meta values), the vector file (length against the catalog, segment checksums, finite
vectors), the main index generation (present, checksum) and files nobody accounts for. It needs
no lock and opens nothing for writing: the catalog is read from a private copy, so a store on a
read-only mount, or one whose service runs, can be diagnosed; it never changes a byte. Each
finding says what to do; ``img-agent repair`` (:mod:`~img_agent.index.repair`) fixes what can be.
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from img_agent.errors import StoreError
from img_agent.index.catalog import Catalog
from img_agent.index.integrity import check_vectors, file_crc
from img_agent.index.store_files import (
    CATALOG,
    HEADER,
    INDEX_DIR,
    LOCK,
    STORE_FILES,
    VECTORS,
    linked_files,
    unaccounted_data,
    unsafe_folder,
)
from img_agent.index.vectors import VectorStore
from img_agent.results import DoctorFinding, DoctorReport

REPAIR = "run 'img-agent repair'"
KNOWN = {*STORE_FILES, "thumbs", "service.log", "service.log.1", "lost+found"}
META_INTS = ("format_version", "main_generation", "dim", "vector_rows_intent")


@contextmanager
def catalog_copy(data_dir: Path) -> Iterator[Catalog]:
    """The catalog, opened from a private copy of its files (the store itself is never touched)."""
    with tempfile.TemporaryDirectory(prefix="img-agent-doctor-") as tmp:
        for suffix in ("", "-wal"):
            src = data_dir / (CATALOG + suffix)
            if src.exists() and not src.is_symlink():
                shutil.copyfile(src, Path(tmp) / (CATALOG + suffix))
        catalog = Catalog(Path(tmp) / CATALOG, read_only=False)
        try:
            yield catalog
        finally:
            catalog.close()


def diagnose(data_dir: Path) -> DoctorReport:
    """Every problem found in the store at ``data_dir``; nothing is changed."""
    found: list[DoctorFinding] = []

    def add(severity: str, what: str, fix: str | None = None) -> None:
        found.append(DoctorFinding(severity=severity, what=what, fix=fix))

    if not data_dir.is_dir():
        add("error", f"{data_dir} is not a folder; there is no store here.", "Point --data-dir at a store.")
        return _report(data_dir, found)
    why = unsafe_folder(data_dir)
    if why:
        add("error", f"{why}: other users could change the store's files.", f"chmod go-w {data_dir}")
    for link in linked_files(data_dir):
        add("error", f"{link} is a symbolic link; img-agent never follows links in a data directory.",
            f"{REPAIR} (it moves the link, not its target, to lost+found)")
    lock = data_dir / LOCK
    if lock.exists() and not lock.is_symlink() and not stat.S_ISREG(lock.lstat().st_mode):
        add("error", f"{lock} is not a plain file, so the store cannot be locked.", REPAIR)
    orphaned = unaccounted_data(data_dir)
    if orphaned:
        add("error", f"{data_dir / CATALOG} is missing or empty while the store holds {'; '.join(orphaned)}.",
            f"Restore catalog.sqlite from a backup, or {REPAIR}: it moves these files to lost+found and starts an "
            "empty store; then index your folders again (vectors alone do not say which file they came from).")
        return _report(data_dir, found)
    if not (data_dir / CATALOG).exists():
        add("info", "No catalog yet: an empty store (or not a store).")
        return _report(data_dir, found)
    try:
        with catalog_copy(data_dir) as catalog:
            _check_catalog(data_dir, catalog, add)
    except StoreError as exc:
        add("error", f"The catalog cannot be read: {exc}",
            f"{REPAIR} (it retries without catalog.sqlite-wal, else sets the files aside), or restore a backup.")
    _check_strays(data_dir, add)
    return _report(data_dir, found)


def _report(data_dir: Path, found: list[DoctorFinding]) -> DoctorReport:
    return DoctorReport(data_dir=str(data_dir), ok=not any(f.severity == "error" for f in found), findings=found)


def _check_catalog(data_dir: Path, catalog: Catalog, add) -> None:
    problems = catalog.quick_check()
    if problems:
        add("error", f"SQLite finds the catalog damaged: {'; '.join(problems[:5])}", f"{REPAIR}, or restore a backup.")
        return
    meta = catalog.meta()
    bad = [k for k in META_INTS if k in meta and not _is_int(meta[k])]
    for key in bad:
        add("error", f"The catalog records {key} = {meta[key]!r}, which is not a number.", REPAIR)
    if bad:
        return
    if "model" not in meta:
        add("info", "No model recorded yet: nothing was ever indexed.")
    dim = int(meta["dim"]) if "dim" in meta else None
    header = data_dir / HEADER
    if header.exists():
        try:
            stored = int(json.loads(header.read_text())["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            add("error", f"{header} is damaged ({exc}).", REPAIR)
            return
        if dim is not None and stored != dim:
            add("error", f"{header} says {stored}-d vectors, the catalog {dim}-d.", "Restore a backup of the store.")
            return
        dim = stored
    next_id = catalog.next_id()
    vectors = data_dir / VECTORS
    if dim is None:
        if next_id:
            add("error", f"The catalog has {next_id} ids but no vector dimension is recorded.", REPAIR)
        return
    row_bytes = dim * 4
    size = vectors.stat().st_size if vectors.exists() else 0
    rows = size // row_bytes
    bound = max(next_id, int(meta.get("vector_rows_intent", 0)))
    if size % row_bytes:
        add("warning", f"{vectors} ends with a partial row ({size % row_bytes} bytes), left by an interrupted add.",
            "Opening the store cuts it (it was never acknowledged).")
    if rows < next_id:
        add("error", f"{vectors} holds {rows} vectors but the catalog has {next_id} ids (the file was truncated).",
            f"{REPAIR}: the images without a vector are removed and their files listed for re-indexing.")
    elif rows > bound:
        add("error", f"{vectors} holds {rows} vectors but the catalog accounts for {next_id}: the catalog is older "
            "than the vectors.", f"Restore the matching catalog.sqlite, or {REPAIR} (it moves the extra vectors to "
            "lost+found).")
    elif rows > next_id:
        add("info", f"{vectors} holds {rows - next_id} vectors of an add that never committed; opening cuts them.")
    states = catalog.state_arrays()
    live = np.zeros(next_id, dtype=bool)
    live[states.buffer_ids] = True
    live[states.main_ids] = True
    if vectors.exists() and rows:
        store = VectorStore(data_dir, committed_rows=min(rows, next_id), dim=dim, read_only=True,
                            intent_rows=rows + 1)
        check = check_vectors(catalog, store, live)
        for first, end in check.damaged:
            hit = int(np.count_nonzero(live[first:end]))
            add("error", f"The vectors of ids {first} to {end - 1} do not match their checksum ({hit} live images).",
                f"{REPAIR}: those images are removed and their files listed for re-indexing.")
        if check.nonfinite:
            add("error", f"{len(check.nonfinite)} live images have vectors with NaN or infinite values "
                f"(ids {check.nonfinite[:10]}).", f"{REPAIR}: they are removed and their files listed for re-indexing.")
        if check.unchecked_from is not None and check.unchecked_from < store.rows:
            add("info", f"Vectors from id {check.unchecked_from} on have no checksum yet; the next writable open "
                "records them.")
    _check_generation(data_dir, catalog, add)


def _check_generation(data_dir: Path, catalog: Catalog, add) -> None:
    generation = catalog.meta_int("main_generation", 0) or 0
    index_dir = data_dir / INDEX_DIR
    current = index_dir / f"gen-{generation:06d}.faiss"
    if generation:
        expected = catalog.meta_int("main_crc")
        if not current.exists():
            add("warning", f"The main index file {current} is missing.", "Opening the store rebuilds it from the vectors.")
        elif expected is not None and file_crc(current) != expected:
            add("warning", f"The main index file {current} does not match its checksum (damaged).",
                "Opening the store rebuilds it from the vectors (or run 'img-agent repair').")
    if index_dir.is_dir():
        for path in sorted(index_dir.iterdir()):
            if path != current or not generation:
                add("warning", f"{path} belongs to no current generation (an orphan).",
                    f"{REPAIR} (it moves it to lost+found).")


def _check_strays(data_dir: Path, add) -> None:
    for path in sorted(data_dir.iterdir()):
        if path.name not in KNOWN:
            add("info", f"{path} is not a file of img-agent's store; it is left alone.")


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
