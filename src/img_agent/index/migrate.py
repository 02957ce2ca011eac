"""Moving a store's vectors between the faiss engine and Milvus, ids preserved, resumable.

To Milvus: the live images are copied in id order, in batches, from the catalog and the vector file
into the collection; after every batch the catalog records how far the copy got (:data:`PROGRESS_KEY`),
so an interrupted migration (Ctrl-C, a crash, a server gone) resumes there. Until the last step the
store keeps serving from faiss; the last step brings the collection exactly in step with the catalog
(changes made meanwhile included), builds its index and switches the store over in one catalog write.

Back to faiss: a faiss index is trained on the live vectors of the vector file (which every store
keeps) and the store switches back. Either way the source is left as it was (the faiss files are
removed once the switch is recorded; a Milvus collection stays until dropped with Milvus' tools).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from img_agent.errors import InvalidInputError
from img_agent.index.generations import load_view, remove_stale_generations
from img_agent.index.maintenance import Maintenance
from img_agent.index.milvus_backend import STORE_KEY, SYNCED_KEY, MilvusBackend, live_view
from img_agent.index.milvus_index import MilvusIndex, normal_uri
from img_agent.index.state import State
from img_agent.results import MigrateReport, ProgressCallback

PROGRESS_KEY = "migrate_progress"
"""Catalog meta key: '<target uri> <last id copied>' while a migration to Milvus is unfinished."""
BATCH = 2_000


def migrate(state: State, maintenance: Maintenance, to: str, *, progress: ProgressCallback | None = None,
            cancel: threading.Event | None = None) -> MigrateReport:
    """Move the vectors of the store open in ``state`` to ``to`` ('faiss' or a Milvus URI).

    Raises:
        InvalidInputError: the store already uses ``to``, or another migration target is unfinished.
        VectorStoreError: Milvus cannot be reached (what was copied stays recorded: run again to resume).
    """
    t0 = time.perf_counter()
    target = normal_uri(to)
    source = state.external.uri if state.external is not None else "faiss"
    if target == source:
        raise InvalidInputError(f"The store already keeps its vectors in {source}; nothing to migrate.")
    maintenance.wait_for_background()
    if target == "faiss":
        return _to_faiss(state, maintenance, source, progress, t0)
    if state.external is not None:
        raise InvalidInputError(f"The store keeps its vectors in {source}; migrate it to 'faiss' first, then to "
                                f"{target}.")
    return _to_milvus(state, source, target, progress, cancel, t0)


def _to_milvus(state: State, source: str, target: str, progress: ProgressCallback | None,
               cancel: threading.Event | None, t0: float) -> MigrateReport:
    settings, catalog = state.settings, state.catalog
    index = MilvusIndex(target, collection=settings.milvus_collection, token=settings.milvus_token,
                        db_name=settings.milvus_db)
    backend = MilvusBackend(state, index)
    try:
        recorded = catalog.meta().get(PROGRESS_KEY, "").rsplit(" ", 1)
        resumed = int(recorded[1]) + 1 if len(recorded) == 2 and recorded[0] == target else 0
        report = MigrateReport(source=source, target=target, resumed_from=resumed)
        dim = state.vectors.dim
        live = np.flatnonzero(state.view.live).astype(np.int64)
        if dim is None or not len(live):
            return _switch_to_milvus(state, backend, report, t0)
        index.ensure(dim, backend.owner())
        todo = live[live >= resumed]
        report.images = len(live)
        for start in range(0, len(todo), BATCH):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            chunk = todo[start : start + BATCH]
            index.upsert(backend.entities(chunk))
            catalog.set_meta(**{PROGRESS_KEY: f"{target} {int(chunk[-1])}"})
            report.copied += len(chunk)
            if progress:
                progress(int(len(live) - len(todo) + start + len(chunk)), len(live), f"copying vectors to {target}")
        if report.cancelled:
            report.seconds = round(time.perf_counter() - t0, 3)
            return report
        return _switch_to_milvus(state, backend, report, t0, progress)
    finally:
        if state.external is not backend:
            index.close()


def _switch_to_milvus(state: State, backend: MilvusBackend, report: MigrateReport, t0: float,
                      progress: ProgressCallback | None = None) -> MigrateReport:
    """Bring the collection exactly in step (under the write lock), index it, and switch the store over."""
    index, catalog = backend.index, state.catalog
    with state.write_lock:
        live = np.flatnonzero(state.view.live).astype(np.int64)
        if state.vectors.dim is not None and len(live):
            index.sync(live, len(state.view.live), backend.entities, progress)
            if progress:
                progress(len(live), len(live), "building the Milvus index")
            index.reindex()
        catalog.reset_main()
        catalog.set_meta(**{STORE_KEY: report.target, PROGRESS_KEY: "", SYNCED_KEY: ""})
        state.external = backend
        state.view = live_view(state)
        backend.open()
    remove_stale_generations(state, 0)
    report.index = backend.describe()
    report.images = int(state.view.n_live)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _to_faiss(state: State, maintenance: Maintenance, source: str, progress: ProgressCallback | None,
              t0: float) -> MigrateReport:
    backend = state.external
    report = MigrateReport(source=source, target="faiss")
    with state.write_lock:
        state.external = None
        try:
            state.view = load_view(state)
            if state.view.n_live:
                built = maintenance.rebuild(progress)
                report.index = built.index
        except BaseException:
            state.external = backend
            state.view = live_view(state)
            raise
        state.catalog.set_meta(**{STORE_KEY: "faiss", SYNCED_KEY: ""})
    if backend is not None:
        backend.index.close()
    report.images = report.copied = int(state.view.n_live)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
