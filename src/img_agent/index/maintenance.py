"""Keeping the main index in shape: merge, compaction, rebuild, self-tuning, checkpoints.

A merge encodes the buffer into a new **segment** beside the main index (:mod:`~img_agent.index.segments`;
the main index is not copied), or, for index types that cannot be segmented, appends it to a copy.
Segments are compacted into the main index in a background thread once they hold enough vectors, which
writes a new generation file (a checkpoint); until then the catalog records the merged rows and opening
re-adds them from the vector store. A rebuild trains a new index on the live vectors only (the one
physical delete) and then measures the cheapest search setting meeting ``recall_target``
(:mod:`~img_agent.index.tuning`). When the collection outgrows its index type, a retrain starts in the
background after a merge. Every job builds off to the side and publishes under the write lock, so
searches and adds go on meanwhile; ``maint_lock`` lets one job run at a time.

The index string a rebuild is given is the store's chosen one (catalog meta ``index_string``,
recorded with the rebuilt generation): status reports it, later merges and automatic rebuilds
keep it, and only another explicit rebuild replaces it (``"auto"`` chooses by size again). A store
without a choice follows the configured ``index_string`` setting.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from dataclasses import replace

import numpy as np

from img_agent.errors import BusyError, InvalidInputError
from img_agent.index import faiss_plan, health, segments, tuning
from img_agent.index.failures import os_error
from img_agent.index.generations import TUNING_KEY, remove_stale_generations
from img_agent.index.health import CHOSEN_INDEX_KEY, chosen_index_string
from img_agent.index.integrity import file_crc
from img_agent.index.state import EMPTY_IDS, State, View
from img_agent.results import IndexStatus, MaintenanceReport, ProgressCallback

log = logging.getLogger(__name__)

# Segments are compacted into the main index (and the file written: a checkpoint) once this many
# merged vectors are not in the file yet, or MAX_SEGMENTS segments exist; until then the catalog and
# the vector store hold them durably and opening re-adds them: merges stay cheap.
CHECKPOINT_MIN_ROWS = 20_000
CHECKPOINT_FRACTION = 0.05


class Maintenance:
    """Merge, rebuild, checkpoint and advise over ``state``; one job at a time (``state.maint_lock``)."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._compactor: threading.Thread | None = None
        self._compactor_lock = threading.Lock()

    # -- jobs ---------------------------------------------------------------------------------
    def maybe_auto_merge(self) -> bool:
        """Merge when the buffer reached the threshold and no job runs; whether it merged.

        When the collection has outgrown its index type (see :func:`~img_agent.index.health.outgrown`), a
        retrain starts in the background instead of waiting for an explicit rebuild.
        """
        state = self._state
        if len(state.view.buffer_ids) < state.settings.merge_threshold:
            return False
        if not state.maint_lock.acquire(blocking=False):
            return False  # a merge or rebuild is running; the buffer keeps serving exactly
        try:
            self._merge_locked(None)
        finally:
            state.maint_lock.release()
        if state.settings.auto_rebuild and health.outgrown(state):
            self._in_background(self._rebuild_when_free, "img-agent-retrain")
        return True

    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        """Append the buffer to the main index without retraining (the first merge builds it)."""
        if not self._acquire():
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
            if self._state.external is not None:
                return self._state.external.merge(progress)
            return self._merge_locked(progress)
        finally:
            self._state.maint_lock.release()

    def _merge_locked(self, progress: ProgressCallback | None) -> MaintenanceReport:
        import faiss

        state = self._state
        t0 = time.perf_counter()
        view = state.view
        ids, vecs = view.buffer_ids, view.buffer_vecs
        if not len(ids):
            return _report("merge", 0, 0, view, t0, retrained=False)
        dim = state.vectors.dim
        if view.main is None:
            plan = faiss_plan.plan_for(len(ids), dim, chosen_index_string(state), state.settings.nprobe)
            index = faiss_plan.build(plan, dim, ids, state.vectors.get, progress)
            tuned = self._tune(index, plan, ids, progress)
            self._publish(index, plan, view.generation + 1, ids, rebuild=False, save=True, last_merge=time.time(),
                          tuned=tuned)
            return _report("merge", len(ids), 0, state.view, t0, retrained=plan.trained, saved=True)
        if view.twin is not None:
            if progress:
                progress(0, len(ids), "encoding the buffer into a new segment")
            segment = segments.new_segment(view.twin, ids, vecs)
            self._publish_segment(segment, ids)
            if progress:
                progress(len(ids), len(ids), "merged")
            if len(state.view.segments) >= segments.MAX_SEGMENTS:
                self._fold_segments()
            report = _report("merge", len(ids), 0, state.view, t0, retrained=False)
            if self._compaction_due():
                self._compact_in_background()
            return report
        index = faiss.clone_index(view.main)
        for start in range(0, len(ids), faiss_plan.ADD_CHUNK):
            index.add_with_ids(vecs[start : start + faiss_plan.ADD_CHUNK], ids[start : start + faiss_plan.ADD_CHUNK])
            if progress:
                progress(min(len(ids), start + faiss_plan.ADD_CHUNK), len(ids), "merging buffer")
        save = view.unsaved + len(ids) >= max(CHECKPOINT_MIN_ROWS, CHECKPOINT_FRACTION * index.ntotal)
        self._publish(index, view.plan, view.generation + 1 if save else view.generation, ids, rebuild=False,
                      save=save, last_merge=time.time())
        return _report("merge", len(ids), 0, state.view, t0, retrained=False, saved=save)

    def _tune(self, index, plan: faiss_plan.IndexPlan, ids: np.ndarray,
              progress: ProgressCallback | None) -> tuning.Tuning | None:
        """Measure the cheapest search setting of a newly trained IVF index holding ``ids`` (None: nothing to tune)."""
        if not tuning.tunable(plan):
            return None
        if progress:
            progress(0, len(ids), f"measuring recall to tune the search setting (target R@10 {self._state.settings.recall_target:g})")
        tuned = tuning.tune(index, plan, self._state.vectors.get, ids, target=self._state.settings.recall_target)
        log.info("tuned %s: %s", plan.factory, tuning.describe(tuned))
        return tuned

    # -- segments and compaction --------------------------------------------------------------
    def _publish_segment(self, segment, ids: np.ndarray) -> None:
        """Add ``segment`` (holding the buffer's ``ids``) beside the main index; the file is written at compaction."""
        state = self._state
        with state.write_lock:
            state.catalog.commit_generation(ids, generation=state.view.generation, rebuild=False, persisted=False,
                                            last_merge=time.time())
            view = state.view
            keep = ~np.isin(view.buffer_ids, ids, assume_unique=True)
            state.view = replace(view, segments=(*view.segments, segment), buffer_ids=view.buffer_ids[keep],
                                 buffer_vecs=view.buffer_vecs[keep], unsaved=view.unsaved + len(ids), spare=None)

    def _fold_segments(self) -> None:
        """Fold the segments into one (their size, not the main index's, is copied): searches stay cheap."""
        state = self._state
        folded = segments.compact(state.view.segments[0], state.view.segments[1:])
        with state.write_lock:
            state.view = replace(state.view, segments=(folded,))

    def _compaction_due(self) -> bool:
        """Whether the segments hold enough vectors to write the main index file again (a checkpoint)."""
        view = self._state.view
        held = sum(segment.ntotal for segment in view.segments)
        return bool(view.segments) and (
            view.unsaved >= max(CHECKPOINT_MIN_ROWS, CHECKPOINT_FRACTION * view.main.ntotal) or held >= view.main.ntotal
        )

    def _compact_in_background(self) -> None:
        """Fold the segments into the main index in a thread of its own (searches and adds go on)."""
        self._in_background(self._compact_when_free, "img-agent-compaction")

    def _in_background(self, job, name: str) -> None:
        """Run ``job`` in a thread of its own unless a background job is still running."""
        with self._compactor_lock:
            if self._compactor is not None and self._compactor.is_alive():
                return
            self._compactor = threading.Thread(target=job, name=name, daemon=True)
            self._compactor.start()

    def _compact_when_free(self) -> None:
        with self._state.maint_lock:
            try:
                self._compact_locked()
            except Exception as exc:  # noqa: BLE001 - the segments stay searchable and are compacted at the next checkpoint
                log.warning("compacting the merged segments failed (%s); they stay searchable and are retried "
                            "at the next merge or on close", exc)

    def _rebuild_when_free(self) -> None:
        with self._state.maint_lock:
            try:
                if health.outgrown(self._state):
                    self._rebuild_locked(None, None)
            except Exception as exc:  # noqa: BLE001 - the current index keeps serving; 'img-agent rebuild' retries
                log.warning("retraining the outgrown index failed (%s); the current one keeps serving. Run "
                            "'img-agent rebuild' to retry.", exc)

    def _compact_locked(self) -> bool:
        view = self._state.view
        if view.main is None or not view.segments:
            return False
        index = segments.compact(view.main, view.segments)
        self._publish(index, view.plan, view.generation + 1, EMPTY_IDS, rebuild=False, save=True,
                      tuned=view.tuning)
        return True

    def _acquire(self) -> bool:
        """Take ``maint_lock`` for an asked-for job: after the background job (if any) ends, else within 0.1 s."""
        self.wait_for_background()
        return self._state.maint_lock.acquire(timeout=0.1)

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait until a background compaction or retrain (if any) has finished."""
        thread = self._compactor
        if thread is not None:
            thread.join(timeout)

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None,
                cancel: threading.Event | None = None) -> MaintenanceReport:
        """Retrain a new main index on the live vectors only; the one physical delete.

        Ids stay the same. Searches, adds and removes go on meanwhile: adds stay in the buffer,
        removals made during the rebuild are filtered out as usual. A given ``index_string`` becomes
        the store's chosen one (see the module docstring); without one the chosen string is kept.
        A trained index then measures its cheapest search setting meeting ``recall_target``. ``cancel``
        set before the new index is published stops the rebuild and discards it: the old index stays.

        Raises:
            InvalidInputError: ``index_string`` is not one the engine can use.
        """
        state = self._state
        self.check_index_string(index_string)
        if not self._acquire():
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
            if state.external is not None:
                return state.external.rebuild(progress, index_string, cancel)
            return self._rebuild_locked(progress, index_string, cancel)
        finally:
            state.maint_lock.release()

    def check_index_string(self, index_string: str | None) -> None:
        """Raise InvalidInputError unless a rebuild can use ``index_string`` (parsed and bounded, nothing built)."""
        state = self._state
        chosen = index_string.strip() if index_string else None
        if state.external is not None:
            state.external.check_index_string(chosen)
        elif chosen is not None and chosen != "auto":
            dim = state.vectors.dim
            if dim is None:
                raise InvalidInputError(f"The store holds no vectors yet, so index string {chosen!r} cannot be "
                                        "checked against their dimension; add images first, then rebuild.")
            faiss_plan.check_factory(chosen, dim, state.view.n_live)

    def _rebuild_locked(self, progress: ProgressCallback | None, index_string: str | None,
                        cancel: threading.Event | None) -> MaintenanceReport:
        state = self._state
        t0 = time.perf_counter()

        def step(done: int, total: int | None, message: str) -> None:
            if cancel is not None and cancel.is_set():
                raise _Stopped
            if progress:
                progress(done, total, message)

        view = state.view
        live_ids = np.flatnonzero(view.live).astype(np.int64)
        dropped = view.main_total + len(view.buffer_ids) - len(live_ids)
        dim = state.vectors.dim
        chosen = index_string.strip() if index_string else None
        meta: dict[str, object] = {"last_rebuild": time.time()}
        if chosen is not None:
            meta[CHOSEN_INDEX_KEY] = chosen
        if not len(live_ids):
            # nothing left: no main index at all (generation 0), every stale file removed
            self._publish(None, None, 0, live_ids, rebuild=True, save=True, **meta)
            return _report("rebuild", 0, dropped, state.view, t0, retrained=False, saved=True)
        plan = faiss_plan.plan_for(len(live_ids), dim, chosen or chosen_index_string(state), state.settings.nprobe)
        try:
            index = faiss_plan.build(plan, dim, live_ids, state.vectors.get, step)
            tuned = self._tune(index, plan, live_ids, step)
            step(len(live_ids), len(live_ids), "publishing the new index")
        except _Stopped:
            log.info("rebuild cancelled before its new index was published; the old one stays")
            return _report("rebuild", 0, 0, state.view, t0, retrained=False).model_copy(update={"cancelled": True})
        self._publish(index, plan, view.generation + 1, live_ids, rebuild=True, save=True, tuned=tuned, **meta)
        return _report("rebuild", len(live_ids), dropped, state.view, t0, retrained=plan.trained, saved=True)

    def checkpoint(self) -> bool:
        """Write merges not yet in the index file, compacting segments (done in the background, and on close)."""
        state = self._state
        if not self._acquire():
            return False
        try:
            view = state.view
            if view.main is None or not view.unsaved:
                return False
            if view.segments:
                return self._compact_locked()
            self._publish(view.main, view.plan, view.generation + 1, EMPTY_IDS, rebuild=False, save=True,
                          tuned=view.tuning)
            return True
        finally:
            state.maint_lock.release()

    def _publish(self, index, plan: faiss_plan.IndexPlan | None, generation: int, ids: np.ndarray, *, rebuild: bool,
                 save: bool, tuned: tuning.Tuning | None = None, **meta: object) -> None:
        """Switch to a new main index holding ``ids`` (exactly, for a rebuild; in addition, for a merge) and no segments.

        With ``save`` the index is first written as file ``generation``; the catalog switches to it
        in the same transaction that records its content, so a crash leaves the old or the new state.
        Without it (a merge between checkpoints) only the catalog records the merge; opening re-adds
        those vectors from the vector store. ``tuned`` is the measured search setting of ``index``.
        """
        state = self._state
        if save and index is not None:
            path = state.gen_path(generation)
            try:
                faiss_plan.write_index(index, path)
            except (OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
                with contextlib.suppress(OSError):
                    path.with_name(path.name + ".tmp").unlink()
                raise os_error(exc if isinstance(exc, OSError) else _errno_of(exc), state.index_dir) from exc
            meta["main_crc"] = file_crc(path)
        view = state.view
        twin = view.twin if index is view.main or (view.main is not None and plan == view.plan and not rebuild) else None
        if index is not None and twin is None:
            twin = segments.empty_twin(index)  # unpublished yet: nobody searches it
        meta[TUNING_KEY] = tuned.to_json() if tuned is not None else ""
        with state.write_lock:
            state.catalog.commit_generation(
                ids, generation=generation, rebuild=rebuild, persisted=save,
                main_factory=plan.factory if plan else "", **meta,
            )
            view = state.view
            keep = ~np.isin(view.buffer_ids, ids, assume_unique=True)
            unsaved = 0 if save or index is None else view.unsaved + len(ids)
            state.view = replace(view, main=index, plan=plan, generation=generation, buffer_ids=view.buffer_ids[keep],
                                 buffer_vecs=view.buffer_vecs[keep], unsaved=unsaved, spare=None, segments=(),
                                 twin=twin, tuning=tuned)
        if save:
            remove_stale_generations(state, generation)

    # -- advice -------------------------------------------------------------------------------
    def advice(self) -> tuple[bool, bool, list[str]]:
        """(merge advised, rebuild advised, human-readable hints)."""
        if self._state.external is not None:
            return self._state.external.advice()
        return health.advice(self._state)

    def maintain(self, progress: ProgressCallback | None = None) -> list[MaintenanceReport]:
        """Merge and rebuild if advised (what ``img-agent index`` runs after adding)."""
        done = []
        merge, rebuild, _ = self.advice()
        if rebuild:
            done.append(self.rebuild(progress))
        elif merge:
            done.append(self.merge(progress))
        return done

    def status(self, *, model: str, pretrained: str, dim: int | None) -> IndexStatus:
        """What the store holds and how it is indexed, with advice."""
        base = health.status(self._state, model=model, pretrained=pretrained, dim=dim)
        return self._state.external.status(base) if self._state.external is not None else base


class _Stopped(Exception):
    """A rebuild's cancel event was seen between two of its steps."""


def _report(op: str, moved: int, dropped: int, view: View, t0: float, *, retrained: bool,
            saved: bool = False) -> MaintenanceReport:
    return MaintenanceReport(
        operation=op, moved=moved, dropped=max(0, dropped), generation=view.generation,
        index=view.plan.factory if view.plan else "none", seconds=round(time.perf_counter() - t0, 4),
        retrained=retrained, saved=saved,
    )


def _errno_of(exc: Exception) -> OSError:
    """The OS error behind a failed faiss write (faiss names it only in its message)."""
    text = str(exc).lower()
    code = errno.ENOSPC if "no space" in text or "disk quota" in text else errno.EIO
    return OSError(code, os.strerror(code))
