"""Searching one view: top-k over the main index and the exact buffer, exact fallback, exact re-rank.

Scores are inner products of unit vectors (cosine similarity): the main index gives them exactly
when it stores full vectors; compressed codes give candidates that are re-ranked exactly from the
vector store. A filter (:mod:`~img_agent.index.filters`) or a ``more like this`` exclusion is applied
inside the index search as a bitmap, so k results come back whenever k exist; a filter's ``min_score``
then drops the results scoring below it.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from img_agent.config import Settings
from img_agent.errors import InvalidInputError
from img_agent.index import faiss_plan, filters, segments
from img_agent.index.rows import record_of
from img_agent.index.state import EMPTY_IDS, State, View
from img_agent.results import SearchFilter, SearchHit

log = logging.getLogger(__name__)

EXACT_SUBSET_MAX = 20_000  # filtered searches over at most this many images are done exactly
_EXACT_CHUNK = 65_536

Exclude = int | list[int] | None
"""Live ids a search leaves out (``more like this`` of an image, or the images of a combined query)."""
Ranked = list[tuple[np.ndarray, np.ndarray]]
"""Per query: (ids int64, cosine scores float32), best first."""


class Searcher:
    """Top-k searches over the published view of ``state``."""

    def __init__(self, state: State) -> None:
        self._state = state

    def hits(self, q: np.ndarray, k: int, filter: SearchFilter | None, exclude: Exclude = None) -> list[list[SearchHit]]:
        """Per query (unit rows of ``q``), the top-k hits with their catalog records."""
        ranked = self.ids(q, k, filter, exclude)
        # Results are those of the view's moment: an image removed since then keeps its record here.
        rows = self._state.catalog.record_rows(np.unique(np.concatenate([r[0] for r in ranked])), include_deleted=True)
        out = []
        for ids, scores in ranked:
            hits = []
            for image_id, score in zip(ids.tolist(), scores.tolist()):
                row = rows.get(image_id)
                if row is not None:  # one validation per hit, straight from the catalog row
                    hits.append(record_of(row, SearchHit, rank=len(hits) + 1, score=round(float(score), 6)))
            out.append(hits)
        return out

    def ids(self, q: np.ndarray, k: int, filter: SearchFilter | None, exclude: Exclude = None) -> Ranked:
        """Per query (unit rows of ``q``), the top-k live ids allowed by ``filter``, minus ``exclude`` (live ids)."""
        if self._state.external is not None:
            ranked = self._state.external.search(self.exact, q, k, filter, exclude)
            return _floor(ranked, filter)
        view = self._state.view
        mask = None
        if filter is not None:
            filters.check(filter)
        if filter is not None and filter.selects:
            ids = self._state.catalog.filtered_ids(filter)
            mask = np.zeros_like(view.live)
            mask[ids[ids < len(mask)]] = True
            mask &= view.live
        if exclude is not None:
            mask = view.live.copy() if mask is None else mask
            mask[exclude] = False
        return _floor(self.in_view(view, q, k, mask), filter)

    def in_view(self, view: View, q: np.ndarray, k: int, mask: np.ndarray | None) -> Ranked:
        """Top-k (ids, cosine scores) per query over main + buffer of ``view``, honouring ``mask``."""
        allowed = view.live if mask is None else mask
        n_allowed = view.n_live if mask is None else int(np.count_nonzero(mask))
        if n_allowed == 0:
            return [(EMPTY_IDS, np.empty(0, np.float32)) for _ in q]
        if mask is not None and n_allowed <= EXACT_SUBSET_MAX:
            return self.exact(q, np.flatnonzero(allowed), k)
        parts: list[Ranked] = [[] for _ in q]
        main_hits = 0
        if view.main_total:
            bitmap = view.bitmap if mask is None else np.packbits(mask, bitorder="little")
            found = self._main(view, q, k, bitmap)
            for i, pair in enumerate(found):
                parts[i].append(pair)
            main_hits = min(len(p[0]) for p in found)
        if len(view.buffer_ids):
            scores = view.buffer_vecs @ q.T  # (nb, nq)
            ok = allowed[view.buffer_ids]
            for i in range(len(q)):
                parts[i].append(topk(view.buffer_ids[ok], scores[ok, i], k))
        out = [topk(np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]), k) for ps in parts]
        expected = min(k, n_allowed)
        if any(len(ids) < expected for ids, _ in out) and view.plan is not None and view.plan.factory != "Flat":
            # The probed lists held too few allowed vectors (heavy deletion or a narrow filter):
            # answer exactly so k live results come back whenever k exist.
            log.debug("approximate search returned %d < %d; falling back to exact", main_hits, expected)
            return self.exact(q, np.flatnonzero(allowed), k)
        return out

    def _main(self, view: View, q: np.ndarray, k: int, bitmap: np.ndarray) -> Ranked:
        import faiss

        plan = view.plan
        selector = faiss_plan.bitmap_selector(bitmap)
        nprobe, candidates = search_setting(view, self._state.settings, k)
        params = faiss_plan.search_params(plan, selector, nprobe)
        kk = min(k if plan.exact_scores else candidates, view.main_total)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1 if len(q) <= 4 else os.cpu_count() or 1)
        try:
            if view.segments:
                dist, labels = segments.search(view.main, view.segments, q, kk, params)
            else:
                dist, labels = view.main.search(q, kk, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        del selector  # the bitmap had to outlive the search
        out = []
        for i in range(len(q)):
            ok = labels[i] >= 0
            ids = labels[i][ok]
            if plan.exact_scores:
                out.append((ids, dist[i][ok]))
            else:
                exact = self._state.vectors.get(ids) @ q[i]
                out.append(topk(ids, exact, k))
        return out

    def exact(self, q: np.ndarray, ids: np.ndarray, k: int) -> Ranked:
        """Brute force over the given ids, read from the vector store in chunks."""
        best: Ranked = [(EMPTY_IDS, np.empty(0, np.float32)) for _ in q]
        for start in range(0, len(ids), _EXACT_CHUNK):
            chunk = ids[start : start + _EXACT_CHUNK]
            scores = self._state.vectors.get(chunk) @ q.T
            for i in range(len(q)):
                cand = topk(chunk, scores[:, i], k)
                best[i] = topk(np.concatenate([best[i][0], cand[0]]), np.concatenate([best[i][1], cand[1]]), k)
        return best


def _floor(ranked: Ranked, filter: SearchFilter | None) -> Ranked:
    """``ranked`` cut at the filter's ``min_score``: a score floor is no condition on the images, so fewer
    than k may remain."""
    if filter is None or filter.min_score is None:
        return ranked
    return [(ids[scores >= filter.min_score], scores[scores >= filter.min_score]) for ids, scores in ranked]


def search_setting(view: View, settings: Settings, k: int) -> tuple[int | None, int]:
    """(nprobe, candidates re-ranked exactly) for a top-``k`` search of ``view``'s main index.

    The user's settings win (``nprobe``; ``rerank`` when changed from its default); otherwise the
    setting the index measured for itself when it was trained (:mod:`~img_agent.index.tuning`);
    otherwise the size rule of :mod:`~img_agent.index.faiss_plan`.
    """
    tuned = view.tuning
    nprobe = settings.nprobe or (tuned.nprobe if tuned is not None else None) or (view.plan.nprobe if view.plan else None)
    if "rerank" in settings.model_fields_set or tuned is None or tuned.candidates(k) is None:
        candidates = faiss_plan.rerank_candidates(k, settings.rerank)
    else:
        candidates = max(k, int(tuned.candidates(k)))
    return nprobe, candidates


def topk(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k by score (descending), ties broken by smaller id, deterministic."""
    if len(ids) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # keep every id tied with the k-th score so tie-breaking by id is exact
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].astype(np.int64), scores[order].astype(np.float32)


def normalise(x: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32, contiguous).

    Raises:
        InvalidInputError: a NaN or infinite value, or an all-zero row.
    """
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{what} contains NaN or infinite values.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInputError(f"{what} contains an all-zero row, which has no direction.")
    return np.ascontiguousarray(x / norms, dtype=np.float32)
