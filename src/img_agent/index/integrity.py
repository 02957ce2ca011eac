"""Checksums of the store's files, and the checks that opening (and ``img-agent doctor``) runs.

- The vector file is cut into segments of :data:`SEGMENT_ROWS` rows; the catalog keeps a CRC-32
  per segment, committed in the same transaction as the rows whose vectors it covers. An append
  extends the CRC of the last segment from the appended bytes only (CRC-32 continues), so adding
  costs nothing extra to read.
- Each main index generation file has a CRC-32 in the catalog's meta (``main_crc``), written in the
  transaction that switches to that generation.

Opening verifies both: a damaged generation is rebuilt from the vectors (the vectors are the
source of truth); a damaged vector segment, or a live vector that is not finite, cannot be rebuilt
without the image files, so opening refuses and names ``img-agent doctor`` / ``img-agent repair``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from img_agent.errors import StoreCorruptError
from img_agent.index.catalog import Catalog
from img_agent.index.failures import DIAGNOSE
from img_agent.index.vectors import VectorStore

SEGMENT_ROWS = 8192
"""Rows per checksummed segment of the vector file (16 MiB of 512-d vectors)."""
_READ_CHUNK = 1 << 24

Segment = tuple[int, int, int]
"""(segment number, rows it holds, CRC-32 of those rows' bytes)."""


def extend_segments(last: Segment | None, start: int, data: bytes, row_bytes: int) -> list[Segment]:
    """The segments that change when ``data`` (whole rows) is appended at row ``start``.

    ``last`` is the catalog's last segment, which must end at ``start``.
    """
    out: list[Segment] = []
    seg, rows, crc = last if last is not None and last[1] < SEGMENT_ROWS else (start // SEGMENT_ROWS, 0, 0)
    if seg * SEGMENT_ROWS + rows != start:
        raise StoreCorruptError(f"The vector checksums end at row {seg * SEGMENT_ROWS + rows}, not at {start}. {DIAGNOSE}.")
    view = memoryview(data)
    while view:
        take = min(SEGMENT_ROWS - rows, len(view) // row_bytes)
        crc = zlib.crc32(view[: take * row_bytes], crc)
        rows += take
        view = view[take * row_bytes:]
        out.append((seg, rows, crc))
        seg, rows, crc = seg + 1, 0, 0
    return out


def _crc_rows(store: VectorStore, start: int, stop: int, crc: int = 0) -> int:
    step = max(1, _READ_CHUNK // max(1, store.row_bytes))
    for a in range(start, stop, step):
        crc = zlib.crc32(np.ascontiguousarray(store.raw(a, min(stop, a + step))).data, crc)
    return crc


@dataclass
class VectorCheck:
    """What verifying the vector file found."""

    damaged: list[tuple[int, int]] = field(default_factory=list)  # [first id, end id) of segments whose CRC differs
    nonfinite: list[int] = field(default_factory=list)  # live ids whose vector holds NaN or infinity
    unchecked_from: int | None = None  # rows from here on have no checksum yet

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.nonfinite


def check_vectors(catalog: Catalog, store: VectorStore, live: np.ndarray | None = None) -> VectorCheck:
    """Verify every segment checksum and that every ``live`` (bool per id) vector is finite."""
    out = VectorCheck()
    covered = 0
    for seg, rows, crc in catalog.segments():
        first = seg * SEGMENT_ROWS
        end = min(first + rows, store.rows)
        if first + rows > store.rows or _crc_rows(store, first, end) != crc:
            out.damaged.append((first, first + rows))
        covered = max(covered, first + rows)
    if covered < store.rows:
        out.unchecked_from = covered
    step = max(1, _READ_CHUNK // max(1, store.row_bytes))
    for a in range(0, store.rows, step):
        rows = store.raw(a, min(store.rows, a + step))
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1)) + a
        if live is not None and len(bad):
            bad = bad[bad < len(live)]
            bad = bad[live[bad]]
        out.nonfinite += bad.tolist()
    return out


def backfill_segments(catalog: Catalog, store: VectorStore, start: int) -> None:
    """Record checksums for rows ``start:`` (stores written before checksums existed)."""
    segments = catalog.segments()
    last = segments[-1] if segments else None
    if last is not None and last[1] < SEGMENT_ROWS and last[0] * SEGMENT_ROWS + last[1] == start:
        seg, pos, crc = last[0], start, last[2]
    else:
        seg = start // SEGMENT_ROWS
        pos, crc = seg * SEGMENT_ROWS, 0
    new = []
    while pos < store.rows:
        stop = min(store.rows, (seg + 1) * SEGMENT_ROWS)
        new.append((seg, stop - seg * SEGMENT_ROWS, _crc_rows(store, pos, stop, crc)))
        seg, pos, crc = seg + 1, stop, 0
    if new:
        catalog.set_segments(new)


def reseal_segments(catalog: Catalog, store: VectorStore, ranges: Sequence[tuple[int, int]]) -> None:
    """Record the checksums of the segments holding the rows ``[first, end)`` of ``ranges`` as they now are."""
    touched = sorted({seg for first, end in ranges for seg in range(first // SEGMENT_ROWS,
                                                                     max(first, end - 1) // SEGMENT_ROWS + 1)})
    new = []
    for seg in touched:
        first, stop = seg * SEGMENT_ROWS, min(store.rows, (seg + 1) * SEGMENT_ROWS)
        if stop > first:
            new.append((seg, stop - first, _crc_rows(store, first, stop)))
    if new:
        catalog.set_segments(new)


def verify_on_open(catalog: Catalog, store: VectorStore, live: np.ndarray) -> None:
    """Refuse a store whose vectors are damaged; record checksums for rows that have none yet."""
    found = check_vectors(catalog, store, live)
    if found.damaged:
        first, end = found.damaged[0]
        raise StoreCorruptError(
            f"{store.path} is damaged: the checksum of the vectors of ids {first} to {end - 1} does not match "
            f"({len(found.damaged)} damaged segment(s)); search results would be wrong. Nothing was changed. {DIAGNOSE} "
            "(it removes the damaged images and lists their files for re-indexing)."
        )
    if found.nonfinite:
        raise StoreCorruptError(
            f"{store.path} holds vectors with NaN or infinite values for ids {found.nonfinite[:10]}; searches near "
            f"them would return nothing. Nothing was changed. {DIAGNOSE} (it removes those images and lists their "
            "files for re-indexing)."
        )
    if found.unchecked_from is not None and not catalog.read_only:
        backfill_segments(catalog, store, found.unchecked_from)


def file_crc(path: Path) -> int:
    """CRC-32 of a whole file."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def check_integrity(catalog: Catalog, vector_rows: int) -> None:
    """Every catalogued id must have a stored vector."""
    next_id = catalog.next_id()
    if next_id > vector_rows:
        raise StoreCorruptError(
            f"The catalog knows ids up to {next_id - 1} but the vector store holds {vector_rows} rows; "
            f"vectors.f32 was truncated or replaced. {DIAGNOSE} (the images without vectors are removed and listed "
            "for re-indexing), or restore the data directory from a backup."
        )
