"""What the parts of an open store share: the published search view and the locks that guard writes.

A :class:`View` is an immutable snapshot of everything a search needs: the trained main index, the
exact in-memory buffer of recently added vectors, and the live bitmap (removed and replaced ids are
excluded inside every search). Writers (add, remove, merge, rebuild) build a new view and publish
it under :attr:`State.write_lock`; searches read :attr:`State.view` once, without locking, so they
never wait for a merge or rebuild.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from img_agent.config import Settings
from img_agent.index import faiss_plan
from img_agent.index.catalog import Catalog
from img_agent.index.tuning import Tuning
from img_agent.index.vectors import VectorStore

EMPTY_IDS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class View:
    """An immutable snapshot of everything a search needs. Replaced, never mutated."""

    main: Any | None  # the faiss main index (never mutated once published)
    plan: faiss_plan.IndexPlan | None
    generation: int
    live: np.ndarray  # bool[next_id]: searchable
    buffer_ids: np.ndarray  # int64, ascending
    buffer_vecs: np.ndarray  # float32 (len(buffer_ids), dim)
    unsaved: int = 0  # vectors in ``main`` and ``segments`` that the generation file does not hold yet
    segments: tuple[Any, ...] = ()  # merged since the last compaction, searched with ``main`` (see segments.py)
    twin: Any | None = None  # an empty trained copy of ``main`` that new segments are cloned from
    tuning: Tuning | None = None  # the measured search setting of ``main`` (see tuning.py)
    spare: Spare | None = field(default=None, repr=False, compare=False)  # room behind the buffer (see with_live)
    bitmap: np.ndarray = field(init=False)  # packed ``live`` for the faiss selector
    n_live: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bitmap", np.packbits(self.live, bitorder="little"))
        object.__setattr__(self, "n_live", int(np.count_nonzero(self.live)))

    @property
    def main_total(self) -> int:
        """Vectors physically in the main index and its segments (live ones and tombstones)."""
        if self.main is None:
            return 0
        return self.main.ntotal + sum(segment.ntotal for segment in self.segments)

    def with_live(self, live: np.ndarray, add_ids: np.ndarray = EMPTY_IDS, add_vecs: np.ndarray | None = None) -> View:
        """This view with liveness ``live``; the buffer keeps its live rows and gains ``add_ids``.

        Appends go into spare capacity behind the buffer (doubling when full), so a bulk add costs
        amortised O(rows added), not a copy of the whole buffer per batch. Rows past a view's own
        length are never read by it, so published views stay unchanged.
        """
        ids, vecs, spare = self.buffer_ids, self.buffer_vecs, self.spare
        keep = live[ids]
        if not keep.all():
            ids, vecs, spare = ids[keep], vecs[keep], None
        if len(add_ids):
            ids, vecs, spare = _appended(ids, vecs, spare, add_ids, np.asarray(add_vecs, dtype=np.float32))
        return replace(self, live=live, buffer_ids=ids, buffer_vecs=vecs, spare=spare)


class Spare:
    """Backing arrays of a buffer with room to grow; ``used`` rows are taken by the newest view."""

    __slots__ = ("ids", "used", "vecs")

    def __init__(self, ids: np.ndarray, vecs: np.ndarray, used: int) -> None:
        self.ids, self.vecs, self.used = ids, vecs, used


def _appended(ids: np.ndarray, vecs: np.ndarray, spare: Spare | None, add_ids: np.ndarray,
              add_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray, Spare]:
    n, m = len(ids), len(add_ids)
    if spare is None or spare.used != n or len(spare.ids) < n + m:
        cap = max(1024, 2 * (n + m))
        dim = add_vecs.shape[1]
        grown = Spare(np.empty(cap, np.int64), np.empty((cap, dim), np.float32), n)
        grown.ids[:n] = ids
        if n:
            grown.vecs[:n] = vecs
        spare = grown
    spare.ids[n : n + m] = add_ids
    spare.vecs[n : n + m] = add_vecs
    spare.used = n + m
    return spare.ids[: n + m], spare.vecs[: n + m], spare


class ExternalStore(Protocol):
    """A vector database holding the store's vectors in place of the faiss index (see milvus_backend.py).

    The writes are called under the write lock after the catalog commit; the catalog stays the authority.
    """

    uri: str

    def added(self, ids: Any, replaced: Any) -> None: ...
    def removed(self, ids: Any) -> None: ...
    def refreshed(self, ids: Any) -> None: ...
    def search(self, exact: Any, q: np.ndarray, k: int, flt: Any, exclude: Any) -> list: ...
    def merge(self, progress: Any = None) -> Any: ...
    def rebuild(self, progress: Any = None, index_string: str | None = None, cancel: Any = None) -> Any: ...
    def check_index_string(self, index_string: str | None) -> None: ...
    def advice(self) -> tuple[bool, bool, list[str]]: ...
    def status(self, base: Any) -> Any: ...
    def close(self) -> None: ...


class State:
    """The open store's shared parts: settings, catalog, vector store, index folder, view and locks.

    ``write_lock`` serialises every change of the catalog's live rows and every publication of a
    new view; ``maint_lock`` lets one merge or rebuild run at a time (adds go on meanwhile).
    """

    def __init__(self, settings: Settings, catalog: Catalog, vectors: VectorStore, *, read_only: bool = False,
                 notices: list[str] | None = None) -> None:
        self.settings = settings
        self.read_only = read_only  # nothing on disk changes: no cleanup, no checkpoint, every change refused
        self.notices: list[str] = list(notices or [])  # what opening found and the user should know (status hints)
        self.damaged_main = False  # the main index file was unusable at open: rebuild it from the vectors
        self.catalog = catalog
        self.vectors = vectors
        self.index_dir: Path = settings.data_dir / "index"
        self.write_lock = threading.RLock()
        self.maint_lock = threading.Lock()
        self.view: View  # published by generations.load_view at open
        self.external: ExternalStore | None = None  # a vector database in place of the faiss index

    def gen_path(self, generation: int) -> Path:
        """The main index file of ``generation``."""
        return self.index_dir / f"gen-{generation:06d}.faiss"
