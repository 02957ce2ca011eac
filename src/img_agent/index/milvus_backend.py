"""The Milvus vector store behind the engine: the same search, filters, add, remove, merge, rebuild and status.

The engine keeps its catalog (ids, paths, notes) and its float vector file either way; with a Milvus
URI the faiss main index and buffer are replaced by a collection (:mod:`~img_agent.index.milvus_index`):

- add: after the catalog commit, the new rows are upserted (and rows they replace deleted);
- remove: after the catalog commit, a Milvus delete;
- tags and descriptions: the changed rows are upserted again (filters read them);
- search: the filter as a boolean expression inside the ANN search, scores cosine (IP on unit
  vectors); when Milvus cannot express a condition exactly, or returns fewer than ``k`` although
  ``k`` match, the answer is computed exactly from the vector file (as the faiss backend does);
- merge: a flush (and the move from exact FLAT to an ANN index once the collection outgrows it);
- rebuild: compaction plus a new index, chosen by size or named (``FLAT``, ``IVF_FLAT``, ``IVF_SQ8``, ``HNSW``);
- status: the catalog's counts with the collection's index and row statistics.

A failed Milvus write after the catalog commit keeps the image (the catalog is the acknowledgement)
and marks the collection stale: the next search or write copies what it missed (:meth:`catch_up`),
as every open does after an unclean close.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from img_agent.errors import ConfigError, StoreError, VectorStoreError
from img_agent.index import filters, milvus_filter
from img_agent.index.generations import load_view
from img_agent.index.milvus_index import MilvusIndex, index_plan, is_lite_uri, is_milvus_uri, normal_uri
from img_agent.index.state import EMPTY_IDS, State, View
from img_agent.results import IndexStatus, MaintenanceReport, ProgressCallback, SearchFilter

log = logging.getLogger(__name__)

STORE_KEY = "vector_store"
"""Catalog meta key: the store's vector store ('faiss' when absent, else the Milvus URI)."""
STORE_ID_KEY = "store_id"
"""Catalog meta key: a random id of the store, claimed by the Milvus collection it writes (never another's)."""
SYNCED_KEY = "milvus_synced"
"""Catalog meta key: '<uri> <next_id> <live>' written at a clean close; opening skips the full comparison when it holds."""

Ranked = list[tuple[np.ndarray, np.ndarray]]


def chosen_store(state: State) -> str:
    """The vector store of the open store: the recorded one; a new store takes the configured one.

    Raises:
        StoreError: the configuration names another vector store than the one the store uses.
    """
    settings, catalog = state.settings, state.catalog
    recorded = catalog.meta().get(STORE_KEY) or "faiss"
    if settings.vector_store is None:
        return recorded
    configured = normal_uri(settings.vector_store)
    if configured == recorded:
        return recorded
    if catalog.next_id() == 0 and not state.read_only:
        catalog.set_meta(**{STORE_KEY: configured})
        return configured
    raise StoreError(
        f"The store {settings.data_dir} keeps its vectors in {recorded}, but the vector store is set to {configured}. "
        f"Move it with 'img-agent migrate --to {configured}', or unset IMG_AGENT_VECTOR_STORE to use it as it is.")


def open_backend(state: State) -> MilvusBackend | None:
    """The Milvus backend of ``state`` (None for the faiss engine)."""
    uri = chosen_store(state)
    if not is_milvus_uri(uri):
        return None
    if state.read_only and is_lite_uri(uri) and not _writable(Path(uri)):
        notice = (f"Milvus Lite cannot open {uri} on a read-only disk (it must write its lock file): searches are "
                  "answered exactly from the store's own vector file, which holds every vector, until the store "
                  "is writable again.")
        log.warning("%s", notice)
        state.notices.append(notice)
        return MilvusBackend(state, None, uri=uri)
    s = state.settings
    return MilvusBackend(state, MilvusIndex(uri, collection=s.milvus_collection, token=s.milvus_token,
                                            db_name=s.milvus_db))


def _writable(path: Path) -> bool:
    """Whether ``path`` (or, before it exists, its folder) can be written."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)


def attach(state: State) -> None:
    """Open the vector store of ``state`` and publish its view: the faiss index, or the Milvus collection."""
    external = state.external = open_backend(state)
    try:
        state.view = live_view(state) if external is not None else load_view(state)
        if external is not None:
            external.open()
    except BaseException:
        if external is not None:
            external.close_index()
        raise


def live_view(state: State) -> View:
    """The view of a Milvus-backed store: the live bitmap only (the collection holds the vectors)."""
    states = state.catalog.state_arrays()
    live = np.zeros(states.next_id, dtype=bool)
    live[states.buffer_ids] = True
    live[states.main_ids] = True
    return View(None, None, 0, live, EMPTY_IDS, np.empty((0, state.vectors.dim or 0), np.float32))


class MilvusBackend:
    """What the engine's parts call on a Milvus-backed store (see the module docstring)."""

    def __init__(self, state: State, index: MilvusIndex | None, *, uri: str | None = None) -> None:
        self._state = state
        self.index = index  # None: a Milvus Lite file that cannot be opened read-only; searched exactly
        self.uri = index.uri if index is not None else str(uri)
        self.stale = False
        self._ready = False
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # ids whose tags or description changed and are not upserted yet

    # -- open and close -----------------------------------------------------------------------
    def open(self, progress: ProgressCallback | None = None) -> None:
        """Prepare the collection and bring it in step with the catalog (fully after an unclean close)."""
        state = self._state
        dim = state.vectors.dim
        if self.index is None:
            return
        if dim is None:
            self.index.check_owner(self.owner())  # no vector yet: the collection is made with the first add
            return
        self.index.ensure(dim, self.owner())
        self._ready = True
        if state.read_only:
            return
        view = state.view
        mark = f"{self.uri} {len(view.live)} {view.n_live}"
        if state.catalog.meta().get(SYNCED_KEY) != mark or self.index.count() != view.n_live:
            added, deleted = self.index.sync(np.flatnonzero(view.live).astype(np.int64), len(view.live), self.entities,
                                             progress)
            if added or deleted:
                log.info("brought Milvus in step with the catalog: %d copied, %d deleted", added, deleted)
        state.catalog.set_meta(**{SYNCED_KEY: ""})  # open: a crash from here on means a full comparison

    def close(self) -> None:
        state = self._state
        try:
            if self._ready and not state.read_only and not self.stale:
                self.index.flush()
                view = state.view
                state.catalog.set_meta(**{SYNCED_KEY: f"{self.uri} {len(view.live)} {view.n_live}"})
        finally:
            self.close_index()

    def close_index(self) -> None:
        if self.index is not None:
            self.index.close()

    def catch_up(self) -> None:
        """Copy to Milvus what a failed write left out (the collection is stale); raises when it still fails."""
        with self._lock:
            if not self.stale:
                return
            if not self._ready:
                self.index.ensure(self._state.vectors.dim, self.owner())
                self._ready = True
            live = self._state.view.live
            self.index.sync(np.flatnonzero(live).astype(np.int64), len(live), self.entities)
            self._upsert_pending()  # present, so the comparison left them as they were
            self.stale = False

    def owner(self) -> str:
        """This store's id (catalog meta ``store_id``, made on first need): the collection is claimed with it."""
        catalog = self._state.catalog
        store_id = catalog.meta().get(STORE_ID_KEY)
        if not store_id:
            store_id = uuid.uuid4().hex
            if not self._state.read_only:
                catalog.set_meta(**{STORE_ID_KEY: store_id})
        return store_id

    def entities(self, ids: np.ndarray) -> list[dict]:
        """The collection entities of the live ``ids``, from the catalog and the vector file."""
        state = self._state
        rows = state.catalog.record_rows(ids.tolist())
        have = np.asarray(sorted(rows), dtype=np.int64)
        vecs = state.vectors.get(have) if len(have) else np.empty((0, 0), np.float32)
        return [milvus_filter.entity(rows[int(i)], vecs[j]) for j, i in enumerate(have)]

    # -- writes (the caller holds the write lock, after the catalog commit) ----------------------
    def added(self, ids: Sequence[int], replaced: Sequence[int]) -> None:
        self._write(lambda: self._added(ids, replaced))

    def _added(self, ids: Sequence[int], replaced: Sequence[int]) -> None:
        if not self._ready:
            self.index.ensure(self._state.vectors.dim, self.owner())
            self._ready = True
        if len(replaced):
            self.index.delete(replaced)
        self.index.upsert(self.entities(np.asarray(ids, dtype=np.int64)))

    def removed(self, ids: Sequence[int]) -> None:
        if self._ready:
            self._write(lambda: self.index.delete(ids))

    def refreshed(self, ids: Sequence[int]) -> None:
        """Rows whose tags or description changed: upsert them again (kept until Milvus has them)."""
        if self._ready and len(ids):
            self._pending.update(int(i) for i in ids)
            self._write(self._upsert_pending)

    def _upsert_pending(self) -> None:
        if self._pending:
            self.index.upsert(self.entities(np.asarray(sorted(self._pending), dtype=np.int64)))
            self._pending.clear()

    def _write(self, job) -> None:
        if self.stale:
            self.catch_up()
            return  # the comparison copied this change too
        try:
            job()
        except VectorStoreError as exc:
            self.stale = True
            raise VectorStoreError(f"{exc} The change is committed in the catalog and reaches Milvus when it "
                                   "answers again.") from exc

    # -- searching ------------------------------------------------------------------------------
    def search(self, exact, q: np.ndarray, k: int, flt: SearchFilter | None, exclude: int | list[int] | None) -> Ranked:
        """Top-k (ids, cosine scores) per query; ``exact(q, ids, k)`` answers from the vector file when needed."""
        if self.stale:
            self.catch_up()
        view = self._state.view
        checked = filters.check(flt) if flt is not None else None
        excluded = [] if exclude is None else ([int(exclude)] if isinstance(exclude, (int, np.integer)) else
                                               [int(i) for i in exclude])
        allowed = view.live
        if checked is not None and flt.selects:
            ids = self._state.catalog.filtered_ids(flt)
            allowed = np.zeros_like(view.live)
            allowed[ids[ids < len(allowed)]] = True
            allowed &= view.live
        if excluded:
            allowed = allowed.copy()
            allowed[[i for i in excluded if 0 <= i < len(allowed)]] = False
        n_allowed = int(np.count_nonzero(allowed))
        if n_allowed == 0:
            return [(EMPTY_IDS, np.empty(0, np.float32)) for _ in q]
        expr = milvus_filter.expression(checked, excluded) if checked is not None else milvus_filter.exclusion(excluded)
        if expr is None or not self._ready:
            return exact(q, np.flatnonzero(allowed), k)
        ranked = []
        for ids, scores in self.index.search(q, k, expr, nprobe=self._state.settings.nprobe):
            ok = (ids < len(allowed)) & allowed[np.minimum(ids, len(allowed) - 1)]  # a removal racing the search
            ranked.append((ids[ok], scores[ok]))
        if any(len(ids) < min(k, n_allowed) for ids, _ in ranked):
            log.debug("Milvus returned fewer than %d of %d allowed; answering exactly", k, n_allowed)
            return exact(q, np.flatnonzero(allowed), k)
        return ranked

    # -- maintenance ----------------------------------------------------------------------------
    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        """Flush growing segments; move from exact search to an ANN index once the collection outgrew it."""
        t0 = time.perf_counter()
        self.catch_up()
        retrained = False
        if self._ready:
            if progress:
                progress(0, 1, "flushing Milvus segments")
            self.index.flush()
            if self.index.outgrown():
                if progress:
                    progress(0, 1, "building the Milvus index for the grown collection")
                self.index.reindex()
                retrained = True
            if progress:
                progress(1, 1, "flushed")
        return self._report("merge", t0, retrained)

    def check_index_string(self, index_string: str | None) -> None:
        """Raise InvalidInputError unless ``index_string`` is 'auto' or a Milvus index type this server builds."""
        try:
            index_plan(0, lite=is_lite_uri(self.uri), choice=(index_string or "auto").strip())
        except ConfigError as exc:
            from img_agent.errors import InvalidInputError

            raise InvalidInputError(f"{exc} This store keeps its vectors in Milvus, so faiss index strings do "
                                    "not apply.") from exc

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None,
                cancel: threading.Event | None = None) -> MaintenanceReport:
        """Compact the collection and build its index anew: ``index_string`` 'auto' (by size) or a Milvus index
        type. Milvus builds in one call, so ``cancel`` is honoured only before it starts."""
        t0 = time.perf_counter()
        choice = (index_string or "auto").strip()
        self.check_index_string(choice)
        if cancel is not None and cancel.is_set():
            return self._report("rebuild", t0, False).model_copy(update={"cancelled": True})
        self.catch_up()
        if self._ready:
            if progress:
                progress(0, 1, f"compacting and indexing the Milvus collection ({choice})")
            self.index.reindex(choice)
            if progress:
                progress(1, 1, "rebuilt")
        self._state.catalog.set_meta(last_rebuild=time.time())
        return self._report("rebuild", t0, self._ready)

    def _report(self, op: str, t0: float, retrained: bool) -> MaintenanceReport:
        if op == "merge":
            self._state.catalog.set_meta(last_merge=time.time())
        return MaintenanceReport(operation=op, moved=self._state.view.n_live, dropped=0, generation=0,
                                 index=self.describe(), seconds=round(time.perf_counter() - t0, 4),
                                 retrained=retrained, saved=True)

    def describe(self) -> str:
        if self.index is None:
            return "milvus lite (not opened on a read-only disk; exact search from the vector file)"
        plan = self.index.plan if self._ready else None
        return plan.describe() if plan is not None else "milvus (no vectors yet)"

    def advice(self) -> tuple[bool, bool, list[str]]:
        hints = []
        if self.stale:
            hints.append(f"Milvus at {self.uri} missed changes (it did not answer); they are copied when it answers "
                         "again. Run 'img-agent merge' to retry now.")
        outgrown = self._ready and self.index.outgrown()
        if outgrown:
            hints.append("rebuild advised: the collection has outgrown exact search; run 'img-agent rebuild' (or "
                         "'img-agent merge').")
        return self.stale, outgrown, hints

    def status(self, base: IndexStatus) -> IndexStatus:
        """``base`` (the catalog's view of the store) with the collection's index and statistics."""
        merge, rebuild, hints = self.advice()
        plan = self.index.plan if self._ready else None
        stats = self.index.stats() if self._ready else {}
        if stats and stats.get("rows") != base.live and not self.stale:
            hints.append(f"Milvus holds {stats['rows']:,} vectors for {base.live:,} live images; reopening the store "
                         "brings them in step.")
        nlist = plan.build.get("nlist") if plan else None
        nprobe = (self._state.settings.nprobe or plan.search.get("nprobe")) if plan and nlist else None
        return base.model_copy(update={
            "main": base.live, "buffer": 0, "deleted": 0, "index": self.describe(), "index_string": "auto",
            "trained": bool(plan and plan.index_type != "FLAT"), "nlist": nlist, "nprobe": nprobe,
            "rerank_candidates": None, "segments": 0,
            "tuned_recall": None, "tuning": None, "generation": 0, "unsaved": 0, "vector_store": self.uri,
            "hints": [*self._state.notices, *hints], "merge_advised": merge, "rebuild_advised": rebuild,
        })
