"""The SQLite plumbing under the catalog: connecting (read-write, or read-only), transactions, the meta table.

Every SQLite error becomes a store error here (:mod:`~img_agent.index.failures`), so no caller
sees a raw ``sqlite3`` exception. With ``read_only`` the database is opened with ``mode=ro``
(``immutable=1`` when not even its ``-shm`` file can be created), nothing is written, and every
write raises :class:`~img_agent.errors.StoreReadOnlyError`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from img_agent.errors import InvalidInputError, StoreCorruptError, StoreError, StoreVersionError
from img_agent.index.failures import DIAGNOSE, read_only, sqlite_error

FORMAT_VERSION = 2


class Database:
    """One SQLite connection, serialised by a lock; subclasses give ``SCHEMA``, ``ADDED_TABLES`` and ``TABLES``."""

    SCHEMA = ""
    ADDED_TABLES = ""  # created when missing at every writable open (tables added within a format version)
    TABLES: frozenset[str] = frozenset()
    MIGRATIONS: dict[int, str] = {}
    """SQL that takes the database from format version ``v`` to ``v + 1``, by ``v``."""

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path = path
        self.tables: set[str] = set()
        self.read_only = read_only
        self.immutable = False
        self._lock = threading.RLock()
        try:
            self._db = self._connect()
            version = self._read_version()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, path) from exc
        if version is None:
            if read_only:
                raise read_only_error(path)
            with self._tx():
                # executescript() would commit on its own; run the statements inside this transaction.
                for stmt in filter(None, (s.strip() for s in self.SCHEMA.split(";"))):
                    self._db.execute(stmt)
                self._db.execute("INSERT INTO meta(key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
                self._db.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (str(time.time()),))
        elif version > FORMAT_VERSION:
            raise StoreVersionError(
                f"The store at {path.parent} has format version {version}, newer than this img-agent understands "
                f"({FORMAT_VERSION}). Upgrade img-agent (pip install -U img-agent) or use another --data-dir."
            )
        elif version < FORMAT_VERSION and read_only:
            raise StoreVersionError(
                f"The store at {path.parent} has format version {version} and needs an upgrade to {FORMAT_VERSION}, "
                "which cannot be written to a read-only folder. Open it once where it is writable (any command "
                "upgrades it in place, keeping every vector), or use an older img-agent to read it."
            )
        elif not read_only:
            with self._tx() as db:
                for stmt in filter(None, (s.strip() for s in self.ADDED_TABLES.split(";"))):
                    db.execute(stmt)
            while version < FORMAT_VERSION:
                self._migrate(version)
                version += 1

    def _migrate(self, version: int) -> None:
        """Upgrade from ``version`` to the next, in one transaction (a crash leaves the old version whole)."""
        with self._tx() as db:
            for stmt in filter(None, (s.strip() for s in self.MIGRATIONS[version].split(";"))):
                db.execute(stmt)
            db.execute("UPDATE meta SET value=? WHERE key='format_version'", (str(version + 1),))

    def _connect(self) -> sqlite3.Connection:
        if not self.read_only:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            # Bulk removals and inserts touch pages all over the table and its indexes: keep them cached
            # (64 MiB, allocated only as used) instead of re-reading them per statement.
            db.execute("PRAGMA cache_size=-65536")
            return db
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # a WAL database whose -shm cannot be created: read the file as it is
            db.close()
        self.immutable = True
        return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False, isolation_level=None)

    # -- plumbing -----------------------------------------------------------------------------
    def _read_version(self) -> int | None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        self.tables = tables
        if not self.TABLES <= tables:
            raise StoreCorruptError(
                f"{self.path} is an SQLite database but not an img-agent catalog. Use another --data-dir."
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        if row is None:
            raise StoreCorruptError(f"{self.path} has no format version; it is damaged. {DIAGNOSE}.")
        return _as_int(row[0], "format_version", self.path)

    class _Tx:
        def __init__(self, cat: Database):
            self.cat = cat

        def __enter__(self):
            if self.cat.read_only:
                raise read_only_error(self.cat.path)
            self.cat._lock.acquire()
            try:
                self.cat._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.cat._lock.release()
                raise sqlite_error(exc, self.cat.path) from exc
            return self.cat._db

        def __exit__(self, exc_type, exc, tb):
            try:
                self.cat._db.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error as failed:
                if exc_type is None:
                    raise sqlite_error(failed, self.cat.path) from failed
            finally:
                self.cat._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, self.cat.path) from exc
            return False

    def _tx(self) -> Database._Tx:
        return Database._Tx(self)

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise sqlite_error(exc, self.path) from exc
            except UnicodeEncodeError:
                raise InvalidInputError(
                    "A path or text given is not valid UTF-8 (undecodable bytes in a file name?); the catalog holds "
                    "UTF-8 names only, so nothing can match it. Rename the file to UTF-8 (e.g. with convmv)."
                ) from None

    def transaction(self) -> Database._Tx:
        """``with db.transaction() as conn:`` one write transaction (read-only: StoreReadOnlyError)."""
        return self._tx()

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """The rows of one read, SQLite errors turned into store errors."""
        return self._query(sql, params)

    def backup_to(self, path: Path) -> None:
        """Copy the database, as of now, to a new file ``path`` (SQLite's online backup)."""
        with self._lock:
            try:
                target = sqlite3.connect(path)
                try:
                    self._db.backup(target)
                finally:
                    target.close()
            except sqlite3.Error as exc:
                raise sqlite_error(exc, path) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM meta"))

    def meta_int(self, key: str, default: int | None = None) -> int | None:
        """Meta value ``key`` as an integer (``default`` when unset); a value that is no integer is damage."""
        value = self.meta().get(key)
        return default if value is None else _as_int(value, key, self.path)

    def set_meta(self, **values: object) -> None:
        with self._tx() as db:
            self._set_meta(db, values)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, values: dict[str, object]) -> None:
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    def quick_check(self) -> list[str]:
        """SQLite's own consistency check of the database: the problems found (none: an empty list)."""
        found = [str(r[0]) for r in self._query("PRAGMA quick_check")]
        return [] if found == ["ok"] else found


def read_only_error(path: Path) -> StoreError:
    if not path.exists():
        return StoreError(
            f"There is no img-agent store in {path.parent}, and that folder is read-only, so none can be created. "
            "Point --data-dir at a store, or at a folder you can write."
        )
    return read_only(path.parent)


def _as_int(value: str, key: str, path: Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StoreCorruptError(
            f"The catalog {path} records {key} = {value!r}, which is not a number: the catalog was edited or damaged. "
            f"{DIAGNOSE}."
        ) from None
