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

``vector_segments`` holds a CRC-32 per segment of the vector file (a fixed number of rows each),
committed with the rows whose vectors they cover; opening checks them.

Commits of this database are the acknowledgement points of the engine: an add has happened once
its rows are committed here (the vectors were appended and fsynced before).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

import numpy as np

from img_agent.errors import ModelMismatchError, NotFoundError
from img_agent.index import filters
from img_agent.index.rows import (
    PHOTO_COLUMNS,
    PHOTO_MARKS,
    RECORD_COLUMNS,
    LiveRow,
    NewImage,
    StateArrays,
    photo_values,
    record_of,
)
from img_agent.index.sqlite_db import FORMAT_VERSION, Database
from img_agent.results import ImageRecord, PhotoMeta, SearchFilter

__all__ = ["FORMAT_VERSION", "Catalog", "LiveRow", "NewImage", "StateArrays"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ADDED = """
CREATE TABLE IF NOT EXISTS vector_segments (segment INTEGER PRIMARY KEY, rows INTEGER NOT NULL, crc INTEGER NOT NULL)
"""

_V2_TABLES = """
CREATE TABLE IF NOT EXISTS image_tags (
    id  INTEGER NOT NULL,
    tag TEXT    NOT NULL,
    PRIMARY KEY (id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_tags_tag ON image_tags(tag);
CREATE TABLE IF NOT EXISTS excluded_paths (path TEXT PRIMARY KEY, removed_at REAL NOT NULL)
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id           INTEGER PRIMARY KEY,
    path         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    format       TEXT    NOT NULL,
    mtime        REAL    NOT NULL,
    added_at     REAL    NOT NULL,
    description  TEXT,
    state        TEXT    NOT NULL CHECK (state IN ('buffer', 'main', 'deleted')),
    in_main      INTEGER NOT NULL DEFAULT 0,
    in_file      INTEGER NOT NULL DEFAULT 0,
    deleted_at   REAL,
    meta_read    INTEGER NOT NULL DEFAULT 0,
    taken_at     REAL,
    taken_offset TEXT,
    camera_make  TEXT,
    camera_model TEXT,
    lens         TEXT,
    gps_lat      REAL,
    gps_lon      REAL,
    orientation  INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS images_live_path ON images(path) WHERE state != 'deleted';
CREATE INDEX IF NOT EXISTS images_live_sha ON images(sha256) WHERE state != 'deleted';
CREATE INDEX IF NOT EXISTS images_state ON images(state, in_main);
""" + _ADDED + ";" + _V2_TABLES

_V1_TO_V2 = """
ALTER TABLE images ADD COLUMN meta_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN taken_at REAL;
ALTER TABLE images ADD COLUMN taken_offset TEXT;
ALTER TABLE images ADD COLUMN camera_make TEXT;
ALTER TABLE images ADD COLUMN camera_model TEXT;
ALTER TABLE images ADD COLUMN lens TEXT;
ALTER TABLE images ADD COLUMN gps_lat REAL;
ALTER TABLE images ADD COLUMN gps_lon REAL;
ALTER TABLE images ADD COLUMN orientation INTEGER;
""" + _V2_TABLES + """;
INSERT OR IGNORE INTO image_tags(id, tag) SELECT images.id, j.value FROM images, json_each(images.tags) AS j
    WHERE json_valid(images.tags) AND j.type = 'text';
ALTER TABLE images DROP COLUMN tags
"""


class Catalog(Database):
    """Thread-safe access to ``catalog.sqlite``: images, their states, meta and vector checksums."""

    SCHEMA = _SCHEMA
    ADDED_TABLES = _ADDED
    MIGRATIONS = {1: _V1_TO_V2}
    TABLES = frozenset({"meta", "images"})

    def bind_model(self, model: str, pretrained: str, dim: int | None) -> None:
        """Record the embedding space on first use; refuse a different one afterwards."""
        meta = self.meta()
        stored = (meta.get("model"), meta.get("pretrained"))
        if stored == (None, None):
            if self.read_only:
                return
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
            stored_dim = self.meta_int("dim")
            if stored_dim is None:
                if not self.read_only:
                    self.set_meta(dim=dim)
            elif stored_dim != dim:
                raise ModelMismatchError(
                    f"The store at {self.path.parent} holds {stored_dim}-d vectors but the model gives {dim}-d. "
                    "Use another --data-dir for this model."
                )

    # -- reads --------------------------------------------------------------------------------
    def state_arrays(self) -> StateArrays:
        def ids(where: str) -> np.ndarray:
            rows = self._query(f"SELECT id FROM images WHERE {where} ORDER BY id")
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
        rows = self._query(
            "SELECT id, sha256, size, mtime, path, meta_read FROM images WHERE path = ? AND state != 'deleted'", (path,))
        return LiveRow(*rows[0]) if rows else None

    def live_by_sha(self, sha256: str) -> LiveRow | None:
        rows = self._query(
            "SELECT id, sha256, size, mtime, path, meta_read FROM images WHERE sha256 = ? AND state != 'deleted' "
            "ORDER BY id LIMIT 1",
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

    def live_ids_at(self, path: str) -> list[int]:
        """Live ids a path names: the image of a file path, or every image indexed under a folder path."""
        row = self.live_by_path(path)
        return [row.id] if row is not None else [i for i, _ in self.live_paths_under(path)]

    def records(self, ids: Sequence[int], *, include_deleted: bool = False) -> dict[int, ImageRecord]:
        """Records of live images by id (removed or unknown ids are absent unless include_deleted)."""
        return {i: record_of(row) for i, row in self.record_rows(ids, include_deleted=include_deleted).items()}

    def record_rows(self, ids: Sequence[int], *, include_deleted: bool = False) -> dict[int, tuple]:
        """The :data:`~img_agent.index.rows.RECORD_COLUMNS` rows of :meth:`records`, by id."""
        live = "" if include_deleted else " AND state != 'deleted'"
        out: dict[int, tuple] = {}
        ids = [int(i) for i in ids if INT64_MIN <= i <= INT64_MAX]  # others are no id at all
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {RECORD_COLUMNS} FROM images WHERE id IN ({marks}){live}", chunk):
                out[row[0]] = row
        return out

    def record(self, image_id: int) -> ImageRecord:
        found = self.records([image_id])
        if image_id not in found:
            raise NotFoundError(
                f"No live image has id {image_id}. Ids come from search results or 'img-agent status'; "
                "removed images keep no id."
            )
        return found[image_id]

    def filtered_ids(self, flt: SearchFilter) -> np.ndarray:
        """Ids (ascending) of live images that ``flt`` allows; see :mod:`~img_agent.index.filters`.

        Raises:
            InvalidInputError: a condition of ``flt`` is unusable (the message says why).
        """
        with self._lock:
            self._db.create_function(filters.FOLD_FUNCTION, 1, filters.fold, deterministic=True)
            return filters.live_ids(self._query, flt)

    # -- writes -------------------------------------------------------------------------------
    def insert(self, ids: Sequence[int], rows: Sequence[NewImage], *, replaced: Sequence[int] = (),
               segments: Sequence[tuple[int, int, int]] = ()) -> None:
        """Insert new buffer rows ``ids[i]: rows[i]`` and retire the rows they replace, atomically, with
        the checksums of the vector-file ``segments`` (segment, rows, crc) that now hold their vectors."""
        now = time.time()
        with self._tx() as db:
            self._put_segments(db, segments)
            if replaced:
                db.executemany(
                    "UPDATE images SET state='deleted', deleted_at=? WHERE id=? AND state != 'deleted'",
                    [(now, int(i)) for i in replaced],
                )
            db.executemany(
                f"INSERT INTO images(id, path, sha256, size, width, height, format, mtime, added_at, description, "
                f"{PHOTO_COLUMNS}, meta_read, state, in_main) VALUES (?,?,?,?,?,?,?,?,?,?,{PHOTO_MARKS},?, 'buffer', 0)",
                [
                    (int(i), f.path, f.sha256, f.size, f.width, f.height, f.format, f.mtime, now, r.description,
                     *photo_values(f.photo), int(f.photo is not None))
                    for i, r in zip(ids, rows, strict=True)
                    for f in (r.file,)
                ],
            )
            db.executemany("INSERT OR IGNORE INTO image_tags(id, tag) VALUES (?, ?)",
                           [(int(i), tag) for i, r in zip(ids, rows, strict=True) for tag in r.tags])

    def set_photo(self, items: Sequence[tuple[int, PhotoMeta]]) -> None:
        """Record the EXIF facts of images indexed before they were read (``meta_read`` becomes 1), atomically."""
        with self._tx() as db:
            db.executemany(
                f"UPDATE images SET ({PHOTO_COLUMNS}, meta_read) = ({PHOTO_MARKS}, 1) WHERE id = ?",
                [(*photo_values(photo), int(i)) for i, photo in items],
            )

    # -- vector-file checksums ----------------------------------------------------------------
    def segments(self) -> list[tuple[int, int, int]]:
        """(segment, rows, crc32) of the vector file, ascending; rows past them have no checksum yet."""
        if self.read_only and self.tables and "vector_segments" not in self.tables:
            return []
        return [(int(a), int(b), int(c)) for a, b, c in self._query(
            "SELECT segment, rows, crc FROM vector_segments ORDER BY segment")]

    def set_segments(self, segments: Sequence[tuple[int, int, int]]) -> None:
        """Record the checksums of ``segments`` (segment, rows, crc32)."""
        with self._tx() as db:
            self._put_segments(db, segments)

    @staticmethod
    def _put_segments(db: sqlite3.Connection, segments: Sequence[tuple[int, int, int]]) -> None:
        db.executemany(
            "INSERT INTO vector_segments(segment, rows, crc) VALUES (?, ?, ?) "
            "ON CONFLICT(segment) DO UPDATE SET rows=excluded.rows, crc=excluded.crc",
            [(int(a), int(b), int(c)) for a, b, c in segments],
        )

    # -- writes (continued) ---------------------------------------------------------------------
    def touch(self, image_id: int, mtime: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE images SET mtime=? WHERE id=?", (mtime, image_id))

    def mark_deleted(self, ids: Sequence[int], *, exclude: bool = False) -> list[int]:
        """Mark live ids deleted; returns those that were live. With ``exclude`` their paths are recorded in
        ``excluded_paths`` in the same transaction (a folder walk then leaves those files out)."""
        ids = sorted({int(i) for i in ids})
        if not ids:
            return []
        now = time.time()
        with self._tx() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS gone_ids (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM gone_ids")
            db.executemany("INSERT OR IGNORE INTO gone_ids(id) VALUES (?)", ((i,) for i in ids))
            live = sorted(r[0] for r in db.execute(
                "UPDATE images SET state='deleted', deleted_at=? WHERE id IN (SELECT id FROM gone_ids) "
                "AND state != 'deleted' RETURNING id", (now,)))
            if exclude and live:
                db.execute("INSERT OR REPLACE INTO excluded_paths(path, removed_at) SELECT path, ? FROM images "
                           "WHERE id IN (SELECT id FROM gone_ids) AND deleted_at = ?", (now, now))
            db.execute("DELETE FROM gone_ids")
        return live

    def excluded_paths(self) -> set[str]:
        """Paths removed by request: a folder walk skips them until the file itself is added again."""
        if self.read_only and self.tables and "excluded_paths" not in self.tables:
            return set()
        return {r[0] for r in self._query("SELECT path FROM excluded_paths")}

    def removed_id(self, path: str) -> int | None:
        """The id the file at ``path`` had when it was last removed (None: never indexed there)."""
        rows = self._query("SELECT id FROM images WHERE path = ? AND state = 'deleted' ORDER BY id DESC LIMIT 1", (path,))
        return int(rows[0][0]) if rows else None

    def readmit(self, paths: Sequence[str]) -> None:
        """Forget that ``paths`` were removed by request."""
        with self._tx() as db:
            db.executemany("DELETE FROM excluded_paths WHERE path=?", [(str(p),) for p in paths])

    def ids_for_paths(self, paths: Sequence[str]) -> dict[str, int]:
        """The live id indexed at each of ``paths`` (paths with none are left out), in one query per 900 paths."""
        out: dict[str, int] = {}
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), 900):
            chunk = paths[start : start + 900]
            marks = ",".join("?" * len(chunk))
            out.update((p, int(i)) for i, p in self._query(
                f"SELECT id, path FROM images WHERE path IN ({marks}) AND state != 'deleted'", chunk))
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
