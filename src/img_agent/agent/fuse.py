"""Fusion of several ranked result lists (one per query variant) into one list, by image id.

Pure functions, no engine and no LLM. Input is a sequence of ``(query, hits)`` pairs, each
``hits`` ranked best first. Every fused hit keeps the catalog record of the image, its **best
cosine score** over all lists (``score``, the one scale used everywhere), the fused score that
ordered it (``fused_score``), and which queries retrieved it (``matched_queries``, in query order)
at which 1-based rank (``query_ranks``).

Methods:

``rrf`` (default)
    Reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009):
    ``fused(d) = sum over lists containing d of 1 / (k + rank(d))`` with ``k = 60`` by default.
    Rank-based, so it needs no score calibration and rewards images found by several variants.
``max``
    ``fused(d) = max cosine over the lists containing d``: a plain "sort by distance" merge.
``mean``
    Mean cosine over *all* lists; for a list that did not return ``d``, the list's lowest score
    stands in (an upper bound of ``d``'s true similarity to that query, since ``d`` ranked below
    it). An image must then match most variants to rank high.

Ties are broken deterministically: higher fused score, then higher best cosine, then better
best rank, then lower image id. Sums use :func:`math.fsum`, so the result does not depend on
the order of the lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from img_agent.agent.defaults import DEFAULT_RRF_K, FUSION_METHODS, FusionMethod
from img_agent.errors import InvalidInputError
from img_agent.results import SearchHit

RankedLists = Sequence[tuple[str, Sequence[SearchHit]]]
"""``[(query, hits best first), ...]``."""


class FusedHit(SearchHit):
    """A search hit after fusion: ``rank`` is the fused rank, ``score`` the best cosine over all queries."""

    fused_score: float = Field(description="The value the fusion method ranked by (RRF sum or fused cosine).")
    matched_queries: list[str] = Field(description="Queries whose results contained this image, in query order.")
    query_ranks: dict[str, int] = Field(
        default_factory=dict, description="1-based rank of this image in each query's result list."
    )


@dataclass
class _Entry:
    best: SearchHit
    first_seen: int
    ranks: dict[int, int] = field(default_factory=dict)  # list index -> 1-based rank
    scores: dict[int, float] = field(default_factory=dict)  # list index -> cosine


def _collect(ranked: RankedLists) -> dict[int, _Entry]:
    entries: dict[int, _Entry] = {}
    order = 0
    for list_index, (_query, hits) in enumerate(ranked):
        for position, hit in enumerate(hits, start=1):
            entry = entries.get(hit.id)
            if entry is None:
                entry = entries[hit.id] = _Entry(best=hit, first_seen=order)
                order += 1
            if list_index in entry.ranks:  # duplicate id within one list: keep its first (better) rank
                continue
            entry.ranks[list_index] = position
            entry.scores[list_index] = hit.score
            if hit.score > entry.best.score:
                entry.best = hit
    return entries


def _validate(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise InvalidInputError(f"Fusion limit must be at least 1, got {limit}.")


def _finish(
    ranked: RankedLists, entries: dict[int, _Entry], fused: dict[int, float], limit: int | None
) -> list[FusedHit]:
    def sort_key(image_id: int) -> tuple[float, float, int, int]:
        entry = entries[image_id]
        return (-fused[image_id], -entry.best.score, min(entry.ranks.values()), image_id)

    ordered = sorted(entries, key=sort_key)
    if limit is not None:
        ordered = ordered[:limit]
    queries = [query for query, _hits in ranked]
    out: list[FusedHit] = []
    for rank, image_id in enumerate(ordered, start=1):
        entry = entries[image_id]
        matched: list[str] = []
        query_ranks: dict[str, int] = {}
        for list_index in sorted(entry.ranks):
            query = queries[list_index]
            if query not in query_ranks:
                matched.append(query)
                query_ranks[query] = entry.ranks[list_index]
        record = entry.best.model_dump(exclude={"rank", "score"})
        out.append(
            FusedHit(
                **record,
                rank=rank,
                score=entry.best.score,
                fused_score=fused[image_id],
                matched_queries=matched,
                query_ranks=query_ranks,
            )
        )
    return out


def reciprocal_rank_fusion(ranked: RankedLists, *, k: int = DEFAULT_RRF_K, limit: int | None = None) -> list[FusedHit]:
    """Fuse by ``sum 1 / (k + rank)``; see the module docstring.

    Raises:
        InvalidInputError: ``k`` negative or ``limit`` below 1.
    """
    if k < 0:
        raise InvalidInputError(f"The RRF constant k must be 0 or more (60 is usual), got {k}.")
    _validate(limit)
    entries = _collect(ranked)
    fused = {image_id: math.fsum(1.0 / (k + r) for r in e.ranks.values()) for image_id, e in entries.items()}
    return _finish(ranked, entries, fused, limit)


def score_fusion(
    ranked: RankedLists, *, how: Literal["max", "mean"] = "max", limit: int | None = None
) -> list[FusedHit]:
    """Fuse by cosine score: the best score (``max``) or the mean over all lists (``mean``).

    Raises:
        InvalidInputError: unknown ``how`` or ``limit`` below 1.
    """
    if how not in ("max", "mean"):
        raise InvalidInputError(f"Score fusion is 'max' or 'mean', got {how!r}.")
    _validate(limit)
    entries = _collect(ranked)
    if how == "max":
        fused = {image_id: e.best.score for image_id, e in entries.items()}
    else:
        floors = {i: min(h.score for h in hits) for i, (_q, hits) in enumerate(ranked) if hits}
        fused = {
            image_id: math.fsum(e.scores.get(i, floor) for i, floor in floors.items()) / len(floors)
            for image_id, e in entries.items()
        }
    return _finish(ranked, entries, fused, limit)


def fuse(
    ranked: RankedLists,
    method: FusionMethod = "rrf",
    *,
    rrf_k: int = DEFAULT_RRF_K,
    limit: int | None = None,
) -> list[FusedHit]:
    """Fuse ranked lists with ``method`` (``rrf``, ``max`` or ``mean``), keeping at most ``limit`` hits.

    Raises:
        InvalidInputError: unknown method or bad parameters.
    """
    if method == "rrf":
        return reciprocal_rank_fusion(ranked, k=rrf_k, limit=limit)
    if method in ("max", "mean"):
        return score_fusion(ranked, how=method, limit=limit)
    raise InvalidInputError(f"Unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}.")
