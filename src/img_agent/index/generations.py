"""The main index on disk: one file per generation, loaded with its unsaved merges and its measured setting.

The main index is one file per generation (``index/gen-000042.faiss``); the catalog records which
generation is current, its CRC-32, which images it holds and which merged images it does not hold yet
(``unsaved``: re-added from the vector store at open), and the measured search setting of the index
(:data:`TUNING_KEY`).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from img_agent.errors import InvalidInputError
from img_agent.index import faiss_plan, segments, tuning
from img_agent.index.integrity import file_crc
from img_agent.index.state import EMPTY_IDS, State, View

log = logging.getLogger(__name__)

TUNING_KEY = "tuning"
"""Catalog meta key of the measured search setting of the current main index (JSON, see tuning.py)."""


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
            plan = faiss_plan.plan_of_loaded(meta["main_factory"], main, state.settings.nprobe)
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
    return View(main, plan, generation, live, buffer, vecs, unsaved_count, twin=segments.empty_twin(main),
                tuning=stored_tuning(state, plan))


def stored_tuning(state: State, plan: faiss_plan.IndexPlan | None) -> tuning.Tuning | None:
    """The measured search setting recorded for the current main index (None when absent or stale)."""
    text = state.catalog.meta().get(TUNING_KEY)
    if not text or plan is None:
        return None
    try:
        tuned = tuning.Tuning.from_json(text)
    except InvalidInputError as exc:
        log.warning("ignoring the recorded search setting: %s", exc)
        return None
    return tuned if tuned.factory == plan.factory else None


def remove_stale_generations(state: State, current: int) -> None:
    """Delete every main index file but that of generation ``current`` (none when 0)."""
    keep = state.gen_path(current).name if current else None
    for path in state.index_dir.glob("gen-*"):
        if path.name != keep:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("Could not remove stale index file %s: %s", path, exc)
