"""Collapsing near-duplicates in search results: k results that are k different pictures.

The ranking is read best first; a candidate whose cosine similarity with an already kept, better
hit is at least the threshold is folded into the best-ranked such hit (listed in its
``duplicates``) instead of taking a place of its own. Reading stops where the (k+1)-th different
picture would start, so each kept hit's ``duplicates`` are exactly the candidates ranked before
that point that were folded into it. When the fetched candidates run out before that, more are
fetched (four times as many each round) until k different pictures are found or no candidates
remain (at most :data:`MAX_COLLAPSE_CANDIDATES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import ConfigDict, Field

from img_agent.index.duplicates import SCORE_TOLERANCE, check_threshold
from img_agent.index.search import Exclude, Searcher
from img_agent.index.state import State
from img_agent.results import SearchFilter, SearchHit

MAX_COLLAPSE_CANDIDATES = 100_000
"""Most candidates one collapsed search reads (a collection of near-copies of one picture ends there)."""
_FIRST_FETCH = 3


class CollapsedHit(SearchHit):
    """A search hit standing for itself and the near-duplicates folded into it. Fields of richer hits it was
    made from (e.g. ``matched_queries``) are kept as they were."""

    model_config = ConfigDict(extra="allow")

    duplicates: list[int] = Field(default_factory=list,
                                  description="Ids of lower-ranked near-duplicates of this image, folded into it.")


def fold(vectors: np.ndarray, k: int, threshold: float) -> tuple[list[int], dict[int, list[int]], bool]:
    """Greedy folding of ranked unit ``vectors`` (best first).

    Returns (kept positions, kept position -> folded positions, whether reading stopped at the
    (k+1)-th different picture, i.e. more candidates would change nothing).
    """
    kept: list[int] = []
    folded: dict[int, list[int]] = {}
    limit = threshold - SCORE_TOLERANCE
    for pos in range(len(vectors)):
        if kept:
            sims = vectors[kept] @ vectors[pos]
            match = np.flatnonzero(sims >= limit)
            if len(match):
                folded[kept[int(match[0])]].append(pos)
                continue
        if len(kept) == k:
            return kept, folded, True
        kept.append(pos)
        folded[pos] = []
    return kept, folded, False


def collapse_ranked(
    rank: Callable[[int], tuple[np.ndarray, np.ndarray]],
    vectors: Callable[[np.ndarray], np.ndarray],
    k: int,
    threshold: float | None,
    available: int,
) -> list[tuple[int, float, list[int]]]:
    """(id, score, folded ids) of up to ``k`` different pictures from ``rank(n)`` (the best n ids and scores).

    ``available`` is how many candidates exist at most (the fetch grows up to it).
    """
    threshold = check_threshold(threshold)
    want = min(max(k * _FIRST_FETCH, k + 10), available, MAX_COLLAPSE_CANDIDATES)
    while True:
        ids, scores = rank(want)
        kept, folded, done = fold(vectors(ids), k, threshold) if len(ids) else ([], {}, False)
        if done or len(ids) < want or want >= min(available, MAX_COLLAPSE_CANDIDATES):
            return [(int(ids[p]), float(scores[p]), [int(ids[f]) for f in folded[p]]) for p in kept]
        want = min(want * 4, available, MAX_COLLAPSE_CANDIDATES)


def collapsed_hits(state: State, searcher: Searcher, q: np.ndarray, k: int, filter: SearchFilter | None,
                   threshold: float | None, exclude: Exclude = None) -> list[CollapsedHit]:
    """The top ``k`` different pictures for the unit query ``q`` (one row), with their folded duplicates."""

    def rank(n: int) -> tuple[np.ndarray, np.ndarray]:
        return searcher.ids(q, n, filter, exclude)[0]

    picked = collapse_ranked(rank, state.vectors.get, k, threshold, max(state.view.n_live, 1))
    records = state.catalog.records([image_id for image_id, _, _ in picked], include_deleted=True)
    hits = []
    for image_id, score, duplicates in picked:
        record = records.get(image_id)
        if record is not None:
            hits.append(CollapsedHit(**record.model_dump(), rank=len(hits) + 1, score=round(score, 6),
                                     duplicates=duplicates))
    return hits


def ranked_hits(state: State, searcher: Searcher, q: np.ndarray, k: int, filter: SearchFilter | None,
                collapse: bool | float, exclude: Exclude = None) -> list[SearchHit]:
    """Top-k hits for one unit query ``q``; with ``collapse`` (True = the default duplicate threshold, or a
    cosine threshold) k different pictures, each a :class:`CollapsedHit` carrying its folded near-duplicates."""
    if collapse is False:
        return searcher.hits(q, k, filter, exclude=exclude)[0]
    return list(collapsed_hits(state, searcher, q, k, filter, None if collapse is True else collapse, exclude))


def collapse_hit_list(state: State, hits: Sequence[SearchHit], k: int, threshold: float | None) -> list[SearchHit]:
    """Fold near-duplicates within an already ranked list of hits (best first); keeps up to ``k``, re-ranked."""
    threshold = check_threshold(threshold)
    if not hits:
        return []
    vectors = state.vectors.get(np.array([hit.id for hit in hits], dtype=np.int64))
    kept, folded, _ = fold(vectors, k, threshold)
    return [
        CollapsedHit(**{**hits[p].model_dump(), "rank": rank, "duplicates": [hits[f].id for f in folded[p]]})
        for rank, p in enumerate(kept, start=1)
    ]
