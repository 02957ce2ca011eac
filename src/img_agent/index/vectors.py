"""Append-only float32 vector store: row ``i`` is the embedding of image id ``i``.

``vectors.f32`` holds raw little-endian float32 rows; ``vectors.json`` is its header (format
version, dimension). Rows are appended and fsynced before the catalog commits the ids that point
at them, so a committed id always has its vector. Before each append the catalog records how far
the file may grow (``vector_rows_intent``); rows past the catalog's last id but within that bound
were left by a crash between the two steps and are cut off at open. Rows past the bound are data
the catalog does not account for: opening refuses rather than destroy them (``img-agent repair``
moves them aside). Readers use a read-only memory map, so re-ranking and rebuild read rows by id
without loading the file. Store files are opened without following symbolic links.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from img_agent.errors import InvalidInputError, StoreCorruptError, StoreVersionError
from img_agent.index.durable import fsync_dir, write_atomic
from img_agent.index.failures import DIAGNOSE, os_error, read_only

FORMAT_VERSION = 1
_DTYPE = np.dtype("<f4")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class VectorStore:
    """Dense id -> float32 row file. Appends are serialised; reads are lock-free snapshots."""

    def __init__(self, folder: Path, *, committed_rows: int, dim: int | None, read_only: bool = False,
                 intent_rows: int | None = None):
        self.read_only = read_only
        self.path = folder / "vectors.f32"
        self.header_path = folder / "vectors.json"
        self._lock = threading.Lock()
        self.dim: int | None = None
        if self.header_path.exists():
            try:
                header = json.loads(self.header_path.read_text())
                version, self.dim = int(header["format_version"]), int(header["dim"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreCorruptError(f"{self.header_path} is damaged ({exc}). {DIAGNOSE}.") from exc
            if version > FORMAT_VERSION:
                raise StoreVersionError(
                    f"{self.path} has format version {version}, newer than this img-agent understands "
                    f"({FORMAT_VERSION}). Upgrade img-agent or use another --data-dir."
                )
        elif dim is not None and not read_only:
            self._init_header(dim)
        if dim is not None and self.dim is not None and dim != self.dim:
            raise StoreCorruptError(
                f"{self.path} holds {self.dim}-d vectors but the catalog says {dim}-d. Use another --data-dir."
            )
        self._rows = 0
        self._view = np.empty((0, self.dim or 0), dtype=_DTYPE)
        if self.dim is not None:
            self._open_rows(committed_rows, max(committed_rows, intent_rows or 0))
        elif committed_rows:
            raise StoreCorruptError(f"{self.header_path} is missing but the catalog has {committed_rows} images. {DIAGNOSE}.")

    def _init_header(self, dim: int) -> None:
        if self.read_only:
            raise read_only(self.path.parent)
        try:
            # the row file first: a header on disk always has its row file beside it, whatever a crash interrupts
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o644))
            write_atomic(self.header_path, json.dumps({"format_version": FORMAT_VERSION, "dim": dim, "dtype": "float32"}).encode())
        except OSError as exc:
            raise os_error(exc, self.path.parent) from exc
        self.dim = dim

    @property
    def row_bytes(self) -> int:
        return (self.dim or 0) * _DTYPE.itemsize

    def _open_rows(self, committed_rows: int, bound: int) -> None:
        row_bytes = self.row_bytes
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < committed_rows * row_bytes:
            raise StoreCorruptError(
                f"{self.path} holds {size // row_bytes} vectors but the catalog has {committed_rows} ids; the file was "
                f"truncated or replaced. {DIAGNOSE} (images without a vector are removed and listed for re-indexing), "
                "or restore the data directory from a backup."
            )
        if size > bound * row_bytes:
            raise StoreCorruptError(
                f"{self.path} holds {size / row_bytes:.0f} vectors but the catalog accounts for {committed_rows} (and "
                f"no add was under way past {bound}): the catalog is older than the vectors (restored or replaced). "
                f"Nothing was changed. {DIAGNOSE} (it moves the extra vectors aside to lost+found), or restore "
                "catalog.sqlite from the backup that matches."
            )
        if size != committed_rows * row_bytes and not self.read_only:
            # Rows appended by an add that never committed (crash between fsync and catalog commit).
            try:
                fd = os.open(self.path, os.O_RDWR | _NOFOLLOW)
                try:
                    os.ftruncate(fd, committed_rows * row_bytes)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise os_error(exc, self.path.parent) from exc
        self._rows = committed_rows
        self._remap()

    def _remap(self) -> None:
        if self._rows == 0:
            self._view = np.empty((0, self.dim or 0), dtype=_DTYPE)
        else:
            self._view = np.memmap(self.path, dtype=_DTYPE, mode="r", shape=(self._rows, self.dim))

    @property
    def rows(self) -> int:
        return self._rows

    def raw(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as stored (a read-only memory-mapped slice)."""
        return self._view[start:stop]

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows for ``ids`` (int array) as a float32 array in memory."""
        return np.asarray(self._view[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def append(self, vectors: np.ndarray) -> int:
        """Append rows durably; returns the id of the first one. The caller commits the catalog next."""
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        if vectors.ndim != 2:
            raise InvalidInputError(f"vectors must be a 2-d array, got shape {vectors.shape}.")
        if self.read_only:
            raise read_only(self.path.parent)
        with self._lock:
            if self.dim is None:
                self._init_header(vectors.shape[1])
            if vectors.shape[1] != self.dim:
                raise InvalidInputError(
                    f"vectors have dimension {vectors.shape[1]} but this store holds {self.dim}-d embeddings."
                )
            start = self._rows
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o644)
                try:
                    os.lseek(fd, start * self.row_bytes, os.SEEK_SET)
                    view = memoryview(vectors.tobytes())
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise os_error(exc, self.path.parent) from exc
            self._rows = start + len(vectors)
            self._remap()
            return start

    def rollback(self, rows: int) -> None:
        """Forget rows from ``rows`` on (their catalog commit failed); the file is cut at next open."""
        with self._lock:
            if rows < self._rows:
                self._rows = rows
                self._remap()
