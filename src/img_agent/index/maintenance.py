"""Keeping the main index in shape: generation files, merge, rebuild, checkpoints, advice, status.

The main index is one file per generation (``index/gen-000042.faiss``). A merge appends the
buffer to the main index without retraining; a rebuild trains a new one on the live vectors
only (the one physical delete). Both build off to the side and publish the new index under the
write lock, so searches and adds go on meanwhile. A merge writes a new generation file only
every so often (a checkpoint); the catalog records the merged rows at once, and opening re-adds
the ones the file does not hold from the vector store.

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
import re
import time
from dataclasses import replace

import numpy as np

from img_agent.errors import BusyError, InvalidInputError
from img_agent.index import faiss_plan
from img_agent.index.failures import os_error
from img_agent.index.integrity import file_crc
from img_agent.index.state import EMPTY_IDS, State, View
from img_agent.results import IndexStatus, MaintenanceReport, ProgressCallback

log = logging.getLogger(__name__)

REBUILD_DELETED_FRACTION = 0.2
# A merge writes the main index file only once this many merged vectors are not in it yet (the
# catalog and vector store already hold them durably; opening re-adds them): merges stay cheap.
CHECKPOINT_MIN_ROWS = 20_000
CHECKPOINT_FRACTION = 0.05
CHOSEN_INDEX_KEY = "index_string"
"""Catalog meta key of the index string chosen by an explicit rebuild."""


def chosen_index_string(state: State) -> str:
    """The index string the store keeps: the one an explicit rebuild chose, else the configured one."""
    return state.catalog.meta().get(CHOSEN_INDEX_KEY) or state.settings.index_string


def load_view(state: State) -> View:
    """The view of the store as committed: the current generation file plus its unsaved merges, and the buffer.

    An unreadable or damaged main index (its CRC-32 differs from the one the catalog recorded) is
    logged and dropped: its images go back to the exact buffer, and the caller rebuilds the index
    from the vectors (``state.damaged_main``). A read-only store drops it in memory only.
    """
    catalog, vectors = state.catalog, state.vectors
    meta = catalog.meta()
    generation = catalog.meta_int("main_generation", 0) or 0
    states = catalog.state_arrays()
    main, plan = None, None
    state.damaged_main = False
    if generation:
        path = state.gen_path(generation)
        in_file = len(states.main_ids) + len(states.tombstone_ids) - len(states.unsaved_ids)
        try:
            expected = catalog.meta_int("main_crc")
            if expected is not None and (crc := file_crc(path)) != expected:
                raise ValueError(f"its checksum is {crc:08x}, the catalog recorded {expected:08x}: the file is damaged")
            main = faiss_plan.read_index(path)
            if main.ntotal != in_file:
                raise ValueError(f"it holds {main.ntotal} vectors, the catalog expects {in_file}")
            plan = faiss_plan.plan_of(meta["main_factory"], vectors.dim, state.settings.nprobe)
        except Exception as exc:  # noqa: BLE001 - any unreadable index is recovered from the vector store
            notice = (f"The main index {path} was unusable ({exc}); it is rebuilt from the stored vectors, which "
                      "are intact (until then its images are searched exactly).")
            log.warning("%s", notice)
            state.notices.append(notice)
            state.damaged_main = True
            if not state.read_only:
                catalog.reset_main()
                states = catalog.state_arrays()
            else:
                states = replace(states, buffer_ids=np.union1d(states.buffer_ids, states.main_ids),
                                 unsaved_ids=EMPTY_IDS)
            main, plan, generation = None, None, 0
        else:
            # merged since the last checkpoint: re-add from the vector store (no retraining)
            unsaved = states.unsaved_ids
            for start in range(0, len(unsaved), faiss_plan.ADD_CHUNK):
                chunk = unsaved[start : start + faiss_plan.ADD_CHUNK]
                main.add_with_ids(vectors.get(chunk), chunk)
    if not state.read_only:
        remove_stale_generations(state, generation)
    live = np.zeros(states.next_id, dtype=bool)
    live[states.buffer_ids] = True
    live[states.main_ids] = True
    buffer = states.buffer_ids
    vecs = vectors.get(buffer) if len(buffer) else np.empty((0, vectors.dim or 0), np.float32)
    unsaved_count = len(states.unsaved_ids) if main is not None else 0
    return View(main, plan, generation, live, buffer, vecs, unsaved_count)


def remove_stale_generations(state: State, current: int) -> None:
    """Delete every main index file but that of generation ``current`` (none when 0)."""
    keep = state.gen_path(current).name if current else None
    for path in state.index_dir.glob("gen-*"):
        if path.name != keep:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("Could not remove stale index file %s: %s", path, exc)


class Maintenance:
    """Merge, rebuild, checkpoint and advise over ``state``; one job at a time (``state.maint_lock``)."""

    def __init__(self, state: State) -> None:
        self._state = state

    # -- jobs ---------------------------------------------------------------------------------
    def maybe_auto_merge(self) -> bool:
        """Merge when the buffer reached the threshold and no job runs; whether it merged."""
        state = self._state
        if len(state.view.buffer_ids) < state.settings.merge_threshold:
            return False
        if not state.maint_lock.acquire(blocking=False):
            return False  # a merge or rebuild is running; the buffer keeps serving exactly
        try:
            self._merge_locked(None)
            return True
        finally:
            state.maint_lock.release()

    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        """Append the buffer to the main index without retraining (the first merge builds it)."""
        if not self._state.maint_lock.acquire(timeout=0.1):
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
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
            retrained = plan.trained
        else:
            plan = view.plan
            index = faiss.clone_index(view.main)
            for start in range(0, len(ids), faiss_plan.ADD_CHUNK):
                index.add_with_ids(vecs[start : start + faiss_plan.ADD_CHUNK], ids[start : start + faiss_plan.ADD_CHUNK])
                if progress:
                    progress(min(len(ids), start + faiss_plan.ADD_CHUNK), len(ids), "merging buffer")
            retrained = False
        unsaved = view.unsaved + len(ids)
        save = view.main is None or unsaved >= max(CHECKPOINT_MIN_ROWS, CHECKPOINT_FRACTION * index.ntotal)
        self._publish(index, plan, view.generation + 1 if save else view.generation, ids, rebuild=False,
                      save=save, last_merge=time.time())
        return _report("merge", len(ids), 0, state.view, t0, retrained=retrained, saved=save)

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None) -> MaintenanceReport:
        """Retrain a new main index on the live vectors only; the one physical delete.

        Ids stay the same. Searches, adds and removes go on meanwhile: adds stay in the buffer,
        removals made during the rebuild are filtered out as usual. A given ``index_string`` becomes
        the store's chosen one (see the module docstring); without one the chosen string is kept.

        Raises:
            InvalidInputError: ``index_string`` is not one the engine can use.
        """
        state = self._state
        if not state.maint_lock.acquire(timeout=0.1):
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
            t0 = time.perf_counter()
            view = state.view
            live_ids = np.flatnonzero(view.live).astype(np.int64)
            dropped = view.main_total + len(view.buffer_ids) - len(live_ids)
            dim = state.vectors.dim
            chosen = index_string.strip() if index_string else None
            meta: dict[str, object] = {"last_rebuild": time.time()}
            if chosen is not None:
                if chosen != "auto":
                    if dim is None:
                        raise InvalidInputError(f"The store holds no vectors yet, so index string {chosen!r} cannot be "
                                                "checked against their dimension; add images first, then rebuild.")
                    faiss_plan.check_factory(chosen, dim, len(live_ids))
                meta[CHOSEN_INDEX_KEY] = chosen
            if not len(live_ids):
                # nothing left: no main index at all (generation 0), every stale file removed
                self._publish(None, None, 0, live_ids, rebuild=True, save=True, **meta)
                return _report("rebuild", 0, dropped, state.view, t0, retrained=False, saved=True)
            plan = faiss_plan.plan_for(len(live_ids), dim, chosen or chosen_index_string(state), state.settings.nprobe)
            index = faiss_plan.build(plan, dim, live_ids, state.vectors.get, progress)
            self._publish(index, plan, view.generation + 1, live_ids, rebuild=True, save=True, **meta)
            return _report("rebuild", len(live_ids), dropped, state.view, t0, retrained=plan.trained, saved=True)
        finally:
            state.maint_lock.release()

    def checkpoint(self) -> bool:
        """Write merges not yet in the index file (done by merges now and then, and on close)."""
        state = self._state
        if not state.maint_lock.acquire(timeout=0.1):
            return False
        try:
            view = state.view
            if view.main is None or not view.unsaved:
                return False
            self._publish(view.main, view.plan, view.generation + 1, EMPTY_IDS, rebuild=False, save=True)
            return True
        finally:
            state.maint_lock.release()

    def _publish(self, index, plan: faiss_plan.IndexPlan | None, generation: int, ids: np.ndarray, *, rebuild: bool,
                 save: bool, **meta: object) -> None:
        """Switch to a new main index holding ``ids`` (exactly, for a rebuild; in addition, for a merge).

        With ``save`` the index is first written as file ``generation``; the catalog switches to it
        in the same transaction that records its content, so a crash leaves the old or the new state.
        Without it (a merge between checkpoints) only the catalog records the merge; opening re-adds
        those vectors from the vector store.
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
        with state.write_lock:
            state.catalog.commit_generation(
                ids, generation=generation, rebuild=rebuild, persisted=save,
                main_factory=plan.factory if plan else "", **meta,
            )
            view = state.view
            keep = ~np.isin(view.buffer_ids, ids, assume_unique=True)
            unsaved = 0 if save or index is None else view.unsaved + len(ids)
            state.view = replace(view, main=index, plan=plan, generation=generation, buffer_ids=view.buffer_ids[keep],
                                 buffer_vecs=view.buffer_vecs[keep], unsaved=unsaved)
        if save:
            remove_stale_generations(state, generation)

    # -- advice -------------------------------------------------------------------------------
    def advice(self) -> tuple[bool, bool, list[str]]:
        """(merge advised, rebuild advised, human-readable hints)."""
        state = self._state
        settings = state.settings
        view = state.view
        hints: list[str] = []
        n_live = view.n_live
        merge = len(view.buffer_ids) >= settings.merge_threshold
        if merge:
            hints.append(f"merge advised: {len(view.buffer_ids):,} images wait in the exact buffer (threshold "
                         f"{settings.merge_threshold:,}); run 'img-agent merge'.")
        rebuild = False
        if view.main is not None:
            tomb = view.main.ntotal - (n_live - len(view.buffer_ids))
            if tomb > REBUILD_DELETED_FRACTION * max(1, view.main.ntotal):
                rebuild = True
                hints.append(f"rebuild advised: {tomb:,} removed images still occupy the main index "
                             f"({tomb / view.main.ntotal:.0%}); run 'img-agent rebuild' to drop them.")
        dim = state.vectors.dim
        if dim and n_live:
            chosen = chosen_index_string(state)
            try:
                want = faiss_plan.plan_for(n_live, dim, chosen, settings.nprobe)
            except InvalidInputError as exc:
                hints.append(f"The index string {chosen!r} does not fit this collection ({exc}) Choose another with "
                             "'img-agent rebuild --index-string', or 'auto'.")
                return merge, rebuild, hints
            have = view.plan.factory if view.plan else None
            if want.note:
                hints.append(want.note)
            if have is not None and have != want.factory and _outgrown(have, want):
                rebuild = True
                hints.append(f"rebuild advised: {n_live:,} images would be served better by {want.factory} "
                             f"than by the current {have}; run 'img-agent rebuild'.")
        return merge, rebuild, hints

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
        state = self._state
        settings = state.settings
        view = state.view
        n_live = view.n_live
        n_buf = len(view.buffer_ids)
        meta = state.catalog.meta()
        merge, rebuild, hints = self.advice()
        hints = [*state.notices, *hints]
        plan = view.plan
        data_dir = settings.data_dir
        return IndexStatus(
            live=n_live,
            main=n_live - n_buf,
            buffer=n_buf,
            deleted=(view.main.ntotal - (n_live - n_buf)) if view.main is not None else 0,
            index=plan.factory if plan else ("none (exact buffer only)" if n_buf else "none"),
            index_string=chosen_index_string(state),
            trained=bool(plan and plan.trained),
            nlist=plan.nlist if plan else None,
            nprobe=plan.nprobe if plan else None,
            rerank_candidates=(
                faiss_plan.rerank_candidates(10, settings.rerank) if plan and not plan.exact_scores else None
            ),
            model=model,
            pretrained=pretrained,
            dim=dim or 0,
            generation=view.generation,
            unsaved=view.unsaved,
            bytes_on_disk=sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()),
            data_dir=str(data_dir),
            merge_threshold=settings.merge_threshold,
            last_merge=_time(meta.get("last_merge")),
            last_rebuild=_time(meta.get("last_rebuild")),
            hints=hints,
            merge_advised=merge,
            rebuild_advised=rebuild,
            read_only=state.read_only,
        )


def _report(op: str, moved: int, dropped: int, view: View, t0: float, *, retrained: bool,
            saved: bool = False) -> MaintenanceReport:
    return MaintenanceReport(
        operation=op, moved=moved, dropped=max(0, dropped), generation=view.generation,
        index=view.plan.factory if view.plan else "none", seconds=round(time.perf_counter() - t0, 4),
        retrained=retrained, saved=saved,
    )


def _time(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _errno_of(exc: Exception) -> OSError:
    """The OS error behind a failed faiss write (faiss names it only in its message)."""
    text = str(exc).lower()
    code = errno.ENOSPC if "no space" in text or "disk quota" in text else errno.EIO
    return OSError(code, os.strerror(code))


def _outgrown(have: str, want: faiss_plan.IndexPlan) -> bool:
    """Whether the current index type no longer fits the collection (worth a retrain)."""
    if have == "Flat" or want.factory == "Flat":
        return True
    m = re.search(r"IVF(\d+)", have)
    if m and want.nlist:
        ratio = want.nlist / int(m.group(1))
        return ratio >= 4 or ratio <= 0.25
    return have.split(",")[-1] != want.factory.split(",")[-1]
