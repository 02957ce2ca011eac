"""Append-only float32 vector store: row ``i`` is the embedding of image id ``i``.

``vectors.f32`` holds raw little-endian float32 rows; ``vectors.json`` is its header (format
version, dimension). Rows are appended and fsynced before the catalog commits the ids that point
at them, so a committed id always has its vector. Rows past the catalog's last id (left by a crash
between the two steps) are cut off at open. Readers use a read-only memory map, so re-ranking and
rebuild read rows by id without loading the file.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from img_agent.errors import InvalidInputError, StoreCorruptError, StoreVersionError
from img_agent.index.durable import fsync_dir, write_atomic

FORMAT_VERSION = 1
_DTYPE = np.dtype("<f4")


class VectorStore:
    """Dense id -> float32 row file. Appends are serialised; reads are lock-free snapshots."""

    def __init__(self, folder: Path, *, committed_rows: int, dim: int | None):
        self.path = folder / "vectors.f32"
        self.header_path = folder / "vectors.json"
        self._lock = threading.Lock()
        self.dim: int | None = None
        if self.header_path.exists():
            try:
                header = json.loads(self.header_path.read_text())
                version, self.dim = int(header["format_version"]), int(header["dim"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreCorruptError(
                    f"{self.header_path} is damaged ({exc}). Restore it or re-index into a new --data-dir."
                ) from exc
            if version > FORMAT_VERSION:
                raise StoreVersionError(
                    f"{self.path} has format version {version}, newer than this img-agent understands "
                    f"({FORMAT_VERSION}). Upgrade img-agent or use another --data-dir."
                )
        elif dim is not None:
            self._init_header(dim)
        if dim is not None and self.dim is not None and dim != self.dim:
            raise StoreCorruptError(
                f"{self.path} holds {self.dim}-d vectors but the catalog says {dim}-d. Use another --data-dir."
            )
        self._rows = 0
        self._view = np.empty((0, self.dim or 0), dtype=_DTYPE)
        if self.dim is not None:
            self._open_rows(committed_rows)
        elif committed_rows:
            raise StoreCorruptError(f"{self.header_path} is missing but the catalog has {committed_rows} images.")

    def _init_header(self, dim: int) -> None:
        write_atomic(self.header_path, json.dumps({"format_version": FORMAT_VERSION, "dim": dim, "dtype": "float32"}).encode())
        self.dim = dim
        self.path.touch()
        fsync_dir(self.path.parent)

    def _open_rows(self, committed_rows: int) -> None:
        assert self.dim is not None
        row_bytes = self.dim * _DTYPE.itemsize
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < committed_rows * row_bytes:
            raise StoreCorruptError(
                f"{self.path} holds {size // row_bytes} vectors but the catalog has {committed_rows} ids; the file was "
                "truncated or replaced. Restore it from a backup or re-index into a new --data-dir."
            )
        if size != committed_rows * row_bytes:
            # Rows appended by an add that never committed (crash between fsync and catalog commit).
            with open(self.path, "r+b") as fh:
                fh.truncate(committed_rows * row_bytes)
                os.fsync(fh.fileno())
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

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows for ``ids`` (int array) as a float32 array in memory."""
        return np.asarray(self._view[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def append(self, vectors: np.ndarray) -> int:
        """Append rows durably; returns the id of the first one. The caller commits the catalog next."""
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        if vectors.ndim != 2:
            raise InvalidInputError(f"vectors must be a 2-d array, got shape {vectors.shape}.")
        with self._lock:
            if self.dim is None:
                self._init_header(vectors.shape[1])
            if vectors.shape[1] != self.dim:
                raise InvalidInputError(
                    f"vectors have dimension {vectors.shape[1]} but this store holds {self.dim}-d embeddings."
                )
            start = self._rows
            with open(self.path, "r+b") as fh:
                fh.seek(start * self.dim * _DTYPE.itemsize)
                fh.write(vectors.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            self._rows = start + len(vectors)
            self._remap()
            return start

    def rollback(self, rows: int) -> None:
        """Forget rows from ``rows`` on (their catalog commit failed); the file is cut at next open."""
        with self._lock:
            if rows < self._rows:
                self._rows = rows
                self._remap()
