"""The catalog: one SQLite database holding every image's id, path, hash, metadata and state.

Ids are dense int64 (row number in the vector store). Each row is in one of three states:

- ``buffer``  live, searched exactly in the in-memory buffer;
- ``main``    live, inside the current main index generation;
- ``deleted`` removed; ``in_main = 1`` while its vector is still physically in the main index
  (a tombstone, filtered out at search time, dropped by the next rebuild).

``in_file = 1`` marks rows whose vector is in the main index *file* of the current generation.
A merge adds the buffer to the in-memory main index and commits ``in_main = 1`` without rewriting
the file (rows ``in_main = 1, in_file = 0``); opening re-adds those rows from the vector store. A
checkpoint (a rebuild, or a merge once enough rows are unsaved) writes a new file and sets
``in_file = in_main`` in the same transaction that switches the generation.

Commits of this database are the acknowledgement points of the engine: an add has happened once
its rows are committed here (the vectors were appended and fsynced before).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from img_agent.errors import ModelMismatchError, NotFoundError, StoreCorruptError, StoreVersionError
from img_agent.results import FileFacts, ImageRecord

FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id          INTEGER PRIMARY KEY,
    path        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    format      TEXT    NOT NULL,
    mtime       REAL    NOT NULL,
    added_at    REAL    NOT NULL,
    description TEXT,
    tags        TEXT    NOT NULL DEFAULT '[]',
    state       TEXT    NOT NULL CHECK (state IN ('buffer', 'main', 'deleted')),
    in_main     INTEGER NOT NULL DEFAULT 0,
    in_file     INTEGER NOT NULL DEFAULT 0,
    deleted_at  REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS images_live_path ON images(path) WHERE state != 'deleted';
CREATE INDEX IF NOT EXISTS images_live_sha ON images(sha256) WHERE state != 'deleted';
CREATE INDEX IF NOT EXISTS images_state ON images(state, in_main);
"""

_RECORD_COLUMNS = "id, path, sha256, size, width, height, format, mtime, added_at, description, tags"


@dataclass(frozen=True)
class NewImage:
    """A row to insert: the file's facts and optional notes (its id comes from the vector store)."""

    file: FileFacts
    description: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveRow:
    id: int
    sha256: str
    size: int
    mtime: float
    path: str


@dataclass(frozen=True)
class StateArrays:
    """Ids by state, as loaded at open: enough to rebuild the in-memory view."""

    next_id: int
    buffer_ids: np.ndarray
    main_ids: np.ndarray
    tombstone_ids: np.ndarray
    unsaved_ids: np.ndarray  # in the main index but not in its file: re-added at open


def _record(row: tuple) -> ImageRecord:
    return ImageRecord(
        id=row[0],
        path=row[1],
        sha256=row[2],
        size=row[3],
        width=row[4],
        height=row[5],
        format=row[6],
        mtime=row[7],
        added_at=row[8],
        description=row[9],
        tags=json.loads(row[10] or "[]"),
    )


class Catalog:
    """Thread-safe access to ``catalog.sqlite`` (one connection, serialised by a lock)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._read_version()
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(
                f"{path} is not a readable img-agent catalog ({exc}). Move it away to start a new store, "
                "or point --data-dir at another folder."
            ) from exc
        if version is None:
            with self._tx():
                # executescript() would commit on its own; run the statements inside this transaction.
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self._db.execute(stmt)
                self._db.execute("INSERT INTO meta(key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
                self._db.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (str(time.time()),))
        elif version > FORMAT_VERSION:
            raise StoreVersionError(
                f"The store at {path.parent} has format version {version}, newer than this img-agent understands "
                f"({FORMAT_VERSION}). Upgrade img-agent (pip install -U img-agent) or use another --data-dir."
            )

    # -- plumbing -----------------------------------------------------------------------------
    def _read_version(self) -> int | None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables or "images" not in tables:
            raise StoreCorruptError(
                f"{self.path} is an SQLite database but not an img-agent catalog. Use another --data-dir."
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        if row is None:
            raise StoreCorruptError(f"{self.path} has no format version; it is damaged. Use another --data-dir.")
        return int(row[0])

    class _Tx:
        def __init__(self, cat: Catalog):
            self.cat = cat

        def __enter__(self):
            self.cat._lock.acquire()
            self.cat._db.execute("BEGIN IMMEDIATE")
            return self.cat._db

        def __exit__(self, exc_type, exc, tb):
            try:
                self.cat._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.cat._lock.release()
            return False

    def _tx(self) -> Catalog._Tx:
        return Catalog._Tx(self)

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM meta"))

    def set_meta(self, **values: object) -> None:
        with self._tx() as db:
            self._set_meta(db, values)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, values: dict[str, object]) -> None:
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    def bind_model(self, model: str, pretrained: str, dim: int | None) -> None:
        """Record the embedding space on first use; refuse a different one afterwards."""
        meta = self.meta()
        stored = (meta.get("model"), meta.get("pretrained"))
        if stored == (None, None):
            values: dict[str, object] = {"model": model, "pretrained": pretrained}
            if dim is not None:
                values["dim"] = dim
            self.set_meta(**values)
            return
        if stored != (model, pretrained):
            raise ModelMismatchError(
                f"The store at {self.path.parent} holds embeddings of {stored[0]} ({stored[1]}), not "
                f"{model} ({pretrained}); mixing embedding spaces would give meaningless results. Run with "
                f"--model {stored[0]} --pretrained {stored[1]}, or use another --data-dir for the other model."
            )
        if dim is not None:
            stored_dim = meta.get("dim")
            if stored_dim is None:
                self.set_meta(dim=dim)
            elif int(stored_dim) != dim:
                raise ModelMismatchError(
                    f"The store at {self.path.parent} holds {stored_dim}-d vectors but the model gives {dim}-d. "
                    "Use another --data-dir for this model."
                )

    # -- reads --------------------------------------------------------------------------------
    def state_arrays(self) -> StateArrays:
        def ids(where: str) -> np.ndarray:
            rows = self._db.execute(f"SELECT id FROM images WHERE {where} ORDER BY id").fetchall()
            return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

        with self._lock:
            return StateArrays(
                next_id=self.next_id(),
                buffer_ids=ids("state = 'buffer'"),
                main_ids=ids("state = 'main'"),
                tombstone_ids=ids("state = 'deleted' AND in_main = 1"),
                unsaved_ids=ids("in_main = 1 AND in_file = 0"),
            )

    def next_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id) + 1, 0) FROM images")[0][0])

    def live_by_path(self, path: str) -> LiveRow | None:
        rows = self._query("SELECT id, sha256, size, mtime, path FROM images WHERE path = ? AND state != 'deleted'", (path,))
        return LiveRow(*rows[0]) if rows else None

    def live_by_sha(self, sha256: str) -> LiveRow | None:
        rows = self._query(
            "SELECT id, sha256, size, mtime, path FROM images WHERE sha256 = ? AND state != 'deleted' ORDER BY id LIMIT 1",
            (sha256,),
        )
        return LiveRow(*rows[0]) if rows else None

    def live_paths_under(self, prefix: str) -> list[tuple[int, str]]:
        """Live (id, path) whose path lies under the folder ``prefix``."""
        folder = prefix.rstrip("/") + "/"
        return [
            (r[0], r[1])
            for r in self._query(
                "SELECT id, path FROM images WHERE state != 'deleted' AND substr(path, 1, ?) = ?", (len(folder), folder)
            )
        ]

    def records(self, ids: Sequence[int], *, include_deleted: bool = False) -> dict[int, ImageRecord]:
        """Records of live images by id (removed or unknown ids are absent unless include_deleted)."""
        live = "" if include_deleted else " AND state != 'deleted'"
        out: dict[int, ImageRecord] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._query(
                f"SELECT {_RECORD_COLUMNS} FROM images WHERE id IN ({marks}){live}", chunk
            ):
                out[row[0]] = _record(row)
        return out

    def record(self, image_id: int) -> ImageRecord:
        found = self.records([image_id])
        if image_id not in found:
            raise NotFoundError(
                f"No live image has id {image_id}. Ids come from search results or 'img-agent status'; "
                "removed images keep no id."
            )
        return found[image_id]

    def filtered_ids(self, path_prefix: str | None, path_glob: str | None) -> np.ndarray:
        """Ids of live images matching every given path condition."""
        where = ["state != 'deleted'"]
        params: list[object] = []
        if path_prefix:
            where.append("substr(path, 1, ?) = ?")
            params += [len(path_prefix), path_prefix]
        if path_glob:
            where.append("path GLOB ?")
            params.append(path_glob)
        rows = self._query(f"SELECT id FROM images WHERE {' AND '.join(where)}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- writes -------------------------------------------------------------------------------
    def insert(self, ids: Sequence[int], rows: Sequence[NewImage], *, replaced: Sequence[int] = ()) -> None:
        """Insert new buffer rows ``ids[i]: rows[i]`` and retire the rows they replace, atomically."""
        now = time.time()
        with self._tx() as db:
            if replaced:
                db.executemany(
                    "UPDATE images SET state='deleted', deleted_at=? WHERE id=? AND state != 'deleted'",
                    [(now, int(i)) for i in replaced],
                )
            db.executemany(
                "INSERT INTO images(id, path, sha256, size, width, height, format, mtime, added_at, description, tags,"
                " state, in_main) VALUES (?,?,?,?,?,?,?,?,?,?,?, 'buffer', 0)",
                [
                    (int(i), f.path, f.sha256, f.size, f.width, f.height, f.format, f.mtime, now, r.description,
                     json.dumps(list(r.tags)))
                    for i, r in zip(ids, rows, strict=True)
                    for f in (r.file,)
                ],
            )

    def touch(self, image_id: int, mtime: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE images SET mtime=? WHERE id=?", (mtime, image_id))

    def mark_deleted(self, ids: Sequence[int]) -> list[int]:
        """Mark live ids deleted; returns those that were live."""
        ids = sorted({int(i) for i in ids})
        if not ids:
            return []
        now = time.time()
        with self._tx() as db:
            live = []
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                live += [r[0] for r in db.execute(
                    f"SELECT id FROM images WHERE id IN ({marks}) AND state != 'deleted'", chunk
                )]
            db.executemany("UPDATE images SET state='deleted', deleted_at=? WHERE id=?", [(now, i) for i in live])
        return live

    def ids_for_paths(self, paths: Sequence[str]) -> dict[str, int]:
        out = {}
        for p in paths:
            row = self.live_by_path(p)
            if row is not None:
                out[p] = row.id
        return out

    def commit_generation(
        self, ids: np.ndarray, *, generation: int, rebuild: bool, persisted: bool, **meta: object
    ) -> None:
        """Make ``ids`` exactly (rebuild) or additionally (merge) the content of the main index.

        ``persisted``: the index was written as file ``generation``; the switch to it happens in this
        same transaction, so a crash leaves either the old generation with its rows or the new one.
        """
        with self._tx() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS gen_ids (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM gen_ids")
            db.executemany("INSERT INTO gen_ids(id) VALUES (?)", ((int(i),) for i in ids))
            if rebuild:
                db.execute("UPDATE images SET in_main=0 WHERE in_main=1 AND id NOT IN (SELECT id FROM gen_ids)")
            db.execute(
                "UPDATE images SET in_main=1, state=CASE WHEN state='buffer' THEN 'main' ELSE state END "
                "WHERE id IN (SELECT id FROM gen_ids)"
            )
            db.execute("DELETE FROM gen_ids")
            if persisted:
                db.execute("UPDATE images SET in_file=in_main WHERE in_file != in_main")
                meta = {"main_generation": generation, **meta}
            self._set_meta(db, meta)

    def reset_main(self) -> None:
        """Forget the main index (it could not be loaded): every live row goes back to the buffer."""
        with self._tx() as db:
            db.execute("UPDATE images SET state='buffer' WHERE state='main'")
            db.execute("UPDATE images SET in_main=0, in_file=0 WHERE in_main=1 OR in_file=1")
            self._set_meta(db, {"main_generation": 0})


def check_integrity(catalog: Catalog, vector_rows: int) -> None:
    """Every catalogued id must have a stored vector."""
    next_id = catalog.next_id()
    if next_id > vector_rows:
        raise StoreCorruptError(
            f"The catalog knows ids up to {next_id - 1} but the vector store holds {vector_rows} rows; "
            "vectors.f32 was truncated or replaced. Restore it from a backup or re-index into a new --data-dir."
        )
