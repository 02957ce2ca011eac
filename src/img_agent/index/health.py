"""How a store is doing: advice (merge, rebuild, index type) and the status report."""

from __future__ import annotations

import re

from img_agent.errors import InvalidInputError
from img_agent.index import faiss_plan
from img_agent.index.search import search_setting
from img_agent.index.state import State
from img_agent.index.tuning import describe
from img_agent.results import IndexStatus

REBUILD_DELETED_FRACTION = 0.2
CHOSEN_INDEX_KEY = "index_string"
"""Catalog meta key of the index string chosen by an explicit rebuild."""


def chosen_index_string(state: State) -> str:
    """The index string the store keeps: the one an explicit rebuild chose, else the configured one."""
    return state.catalog.meta().get(CHOSEN_INDEX_KEY) or state.settings.index_string


def advice(state: State) -> tuple[bool, bool, list[str]]:
    """(merge advised, rebuild advised, human-readable hints)."""
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
        total = view.main_total
        tomb = total - (n_live - len(view.buffer_ids))
        if tomb > REBUILD_DELETED_FRACTION * max(1, total):
            rebuild = True
            hints.append(f"rebuild advised: {tomb:,} removed images still occupy the main index "
                         f"({tomb / total:.0%}); run 'img-agent rebuild' to drop them.")
    if view.tuning is not None and not view.tuning.met and settings.nprobe is None:
        hints.append(f"The index's measured search setting misses its recall target ({describe(view.tuning)}).")
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


AUTO_TRAIN_MIN = 20_000
"""Live images from which an outgrown index is retrained without being asked (below it, exact search is cheap)."""


def outgrown(state: State) -> bool:
    """Whether the collection outgrew its index type and is big enough to retrain it unasked (after a merge)."""
    view = state.view
    dim = state.vectors.dim
    if view.plan is None or not dim or view.n_live < AUTO_TRAIN_MIN:
        return False
    try:
        want = faiss_plan.plan_for(view.n_live, dim, chosen_index_string(state), state.settings.nprobe)
    except InvalidInputError:
        return False
    return want.factory != view.plan.factory and _outgrown(view.plan.factory, want)


def status(state: State, *, model: str, pretrained: str, dim: int | None) -> IndexStatus:
    """What the store holds and how it is indexed and searched, with advice."""
    settings = state.settings
    view = state.view
    n_live = view.n_live
    n_buf = len(view.buffer_ids)
    meta = state.catalog.meta()
    merge, rebuild, hints = advice(state)
    hints = [*state.notices, *hints]
    plan = view.plan
    data_dir = settings.data_dir
    nprobe, candidates = search_setting(view, settings, 10) if plan else (None, None)
    tuned = view.tuning
    return IndexStatus(
        live=n_live,
        main=n_live - n_buf,
        buffer=n_buf,
        deleted=(view.main_total - (n_live - n_buf)) if view.main is not None else 0,
        index=plan.factory if plan else ("none (exact buffer only)" if n_buf else "none"),
        index_string=chosen_index_string(state),
        trained=bool(plan and plan.trained),
        nlist=plan.nlist if plan else None,
        nprobe=nprobe if plan and plan.nlist else None,
        rerank_candidates=candidates if plan and not plan.exact_scores else None,
        segments=len(view.segments),
        tuned_recall=tuned.recall if tuned is not None else None,
        recall_target=tuned.target if tuned is not None else settings.recall_target,
        tuning=describe(tuned) if tuned is not None else None,
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


def _time(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _outgrown(have: str, want: faiss_plan.IndexPlan) -> bool:
    """Whether the current index type no longer fits the collection (worth a retrain)."""
    if have == "Flat" or want.factory == "Flat":
        return True
    m = re.search(r"IVF(\d+)", have)
    if m and want.nlist:
        ratio = want.nlist / int(m.group(1))
        return ratio >= 4 or ratio <= 0.25
    return have.split(",")[-1] != want.factory.split(",")[-1]
