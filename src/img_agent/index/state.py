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
from typing import Any

import numpy as np

from img_agent.config import Settings
from img_agent.index import faiss_plan
from img_agent.index.catalog import Catalog
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
    unsaved: int = 0  # vectors in ``main`` that its generation file does not hold yet
    bitmap: np.ndarray = field(init=False)  # packed ``live`` for the faiss selector
    n_live: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bitmap", np.packbits(self.live, bitorder="little"))
        object.__setattr__(self, "n_live", int(np.count_nonzero(self.live)))

    @property
    def main_total(self) -> int:
        """Vectors physically in the main index (live ones and tombstones)."""
        return self.main.ntotal if self.main is not None else 0

    def with_live(self, live: np.ndarray, add_ids: np.ndarray = EMPTY_IDS, add_vecs: np.ndarray | None = None) -> View:
        """This view with liveness ``live``; the buffer keeps its live rows and gains ``add_ids``."""
        keep = live[self.buffer_ids]
        ids, vecs = self.buffer_ids[keep], self.buffer_vecs[keep]
        if len(add_ids):
            ids = np.concatenate([ids, add_ids])
            vecs = np.concatenate([vecs, add_vecs]) if len(vecs) else np.asarray(add_vecs, dtype=np.float32)
        return replace(self, live=live, buffer_ids=ids, buffer_vecs=vecs)


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
        self.view: View  # published by maintenance.load_view at open

    def gen_path(self, generation: int) -> Path:
        """The main index file of ``generation``."""
        return self.index_dir / f"gen-{generation:06d}.faiss"
