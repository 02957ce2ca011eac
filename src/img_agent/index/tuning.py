"""Self-tuning of IVF search settings: the cheapest (nprobe, re-rank depth) that meets a recall target.

The store measures recall on its own vectors instead of trusting a rule of thumb. :func:`tune` draws a
held-out sample of live ids and builds two query kinds from it:

* **image** queries: the stored vectors themselves, each excluded from its own truth and answers
  (what ``more like this`` does);
* **text** queries: each sample vector pushed away by random noise (:func:`text_like`), because a
  caption's embedding sits much farther from its images (cosine ≈ 0.3-0.5) than images sit from
  each other, and such queries fall between IVF lists more often.

The truth is the exact top-k over the live vectors, computed once by chunked matrix products. Each
setting is then searched with the engine's own path (bitmap selector over the live ids,
:func:`~img_agent.index.faiss_plan.search_params` with the nprobe, exact re-rank of the candidates
from the vector store) and scored as tie-aware R@k: an answer counts when it is a true neighbour or
scores at least as high as the k-th true neighbour.

Cost model: the bytes one query reads, ``nprobe / nlist * N * code_size`` for the scanned lists
plus ``rerank * 4 * dim * RERANK_READ_WEIGHT`` for the gathered float rows (:func:`setting_cost`).
Search at this scale is bound by memory bandwidth, so bytes read track latency; unlike a measured
batch time, the model is the same on a busy or an idle machine, so the choice is reproducible and a
lower target never picks a dearer setting.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from img_agent.errors import InvalidInputError
from img_agent.index import faiss_plan
from img_agent.index.faiss_plan import IndexPlan

log = logging.getLogger(__name__)

DEFAULT_TARGET = 0.99
DEFAULT_SAMPLE = 500
"""Live ids drawn at most; each gives one image and one text query."""
DEFAULT_BUDGET_S = 120.0
RERANK_LADDER = (20, 50, 100, 200, 400)
"""Total candidates re-ranked exactly, tried for compressed codes (those below k are skipped)."""
RERANK_READ_WEIGHT = 2.0
"""A re-ranked row is gathered from a random place in the vector store: it costs this many times the
bytes of a row read in sequence from an inverted list."""
TEXT_COSINE = 0.4
"""Cosine between a text-like query and the image it was made from (CLIP captions: 0.3-0.5)."""
REFINE_STEPS = 3
"""Bisection steps between the last failing and the first passing power-of-two nprobe."""
_TRUTH_CHUNK = 16_384
_RERANK_QUERIES = 32
_TIE_TOL = 1e-5

VectorsGet = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Tuning:
    """A measured search setting for one index.

    ``rerank`` is the total number of candidates re-ranked exactly for a top-``k`` search (None when
    the index gives exact scores); ``recall`` is R@k of all sample queries at the chosen setting,
    ``image_recall``/``text_recall`` per kind; ``met`` says whether both kinds reached ``target``.
    ``cost`` is :func:`setting_cost` (bytes read per query); ``n`` and ``factory`` name what was
    measured, so a caller can tell a stale tuning; ``budget_hit`` says the ladder stopped on time.
    """

    nprobe: int
    rerank: int | None
    target: float
    recall: float
    image_recall: float
    text_recall: float
    queries: int
    seconds: float
    met: bool
    measured_at: float
    k: int = 10
    n: int = 0
    factory: str = ""
    cost: float = 0.0
    budget_hit: bool = False

    def candidates(self, k: int) -> int | None:
        """Candidates to re-rank for a top-``k`` search: the tuned depth scaled by k / self.k (None if exact)."""
        if self.rerank is None:
            return None
        return max(k, math.ceil(self.rerank * k / max(self.k, 1)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Tuning:
        """Read :meth:`to_json` output; unknown keys are ignored.

        Raises:
            InvalidInputError: the text is not a stored tuning.
        """
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            return cls(**{key: value for key, value in data.items() if key in known})
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"Stored search tuning {text[:80]!r} is unreadable ({exc}); run the tuning again.") from exc


@dataclass(frozen=True)
class _Queries:
    q: np.ndarray  # (nq, dim) unit rows, image queries first
    own: np.ndarray  # (nq,) id excluded from truth and answers, -1 for none
    n_image: int
    truth: np.ndarray  # (nq, k) true ids, -1 padded
    kth: np.ndarray  # (nq,) score of the last true neighbour
    expected: np.ndarray  # (nq,) answers a full result has: min(k, allowed ids)
    allowed: np.ndarray  # (max live id + 1,) bool, True for live ids


def tunable(plan: IndexPlan) -> bool:
    """Whether the index has a search setting to tune (IVF indexes: nprobe, and re-rank for compressed codes)."""
    return bool(plan.nlist)


def text_like(v: np.ndarray, rng: np.random.Generator, cosine: float = TEXT_COSINE) -> np.ndarray:
    """Text-like queries from unit rows ``v``: ``normalise(v + sigma * g)`` with ``g ~ N(0, I)``.

    ``sigma = sqrt((1 / cosine**2 - 1) / dim)`` makes the noise's length ``sqrt(1 / cosine**2 - 1)``
    in expectation, so each query has cosine ≈ ``cosine`` with the row it came from, while that row's
    neighbourhood still ranks first.
    """
    if not 0.0 < cosine <= 1.0:
        raise InvalidInputError(f"cosine must be in (0, 1], got {cosine}.")
    dim = v.shape[1]
    sigma = math.sqrt((1.0 / cosine**2 - 1.0) / dim)
    x = v + sigma * rng.standard_normal(v.shape, dtype=np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def setting_cost(plan: IndexPlan, n: int, code_size: int, dim: int, nprobe: int, rerank: int | None) -> float:
    """Modelled bytes one query reads: scanned codes plus re-ranked rows (see the module docstring)."""
    nlist = plan.nlist or 1
    scan = min(nprobe, nlist) / nlist * n * code_size
    return float(scan + (rerank or 0) * 4 * dim * RERANK_READ_WEIGHT)


def tune(
    index,
    plan: IndexPlan,
    vectors_get: VectorsGet,
    live_ids: np.ndarray,
    *,
    target: float = DEFAULT_TARGET,
    k: int = 10,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    budget_s: float = DEFAULT_BUDGET_S,
) -> Tuning:
    """The cheapest measured setting whose R@k reaches ``target`` on both query kinds.

    ``index`` is an IVF index holding exactly the ``live_ids`` that searches may return (ids outside
    ``live_ids`` are masked as deleted); ``vectors_get(ids)`` returns their float rows. nprobe climbs in
    powers of two up to nlist, with every re-rank depth of :data:`RERANK_LADDER` tried per nprobe for
    compressed codes, and settings dearer than the best passing one are not measured; the first
    passing nprobe is then narrowed by bisection. When nothing passes, the setting with the best
    recall on the weaker kind (the cheaper one on a tie) comes back with ``met=False``. After ``budget_s`` seconds no
    further setting is measured (at least one always is) and ``budget_hit`` is set.

    Raises:
        InvalidInputError: the plan has no IVF lists, or the arguments are unusable.
    """
    import faiss

    started = time.monotonic()
    if not tunable(plan):
        raise InvalidInputError(f"Index {plan.factory!r} has no IVF lists, so it has no search setting to tune.")
    if not 0.0 < target <= 1.0 or k < 1 or sample < 1:
        raise InvalidInputError(f"Tuning needs 0 < target <= 1, k >= 1 and sample >= 1 (got {target}, {k}, {sample}).")
    live = np.unique(np.asarray(live_ids, dtype=np.int64))
    if len(live) < 2:
        raise InvalidInputError("Tuning needs at least 2 live vectors in the index; add images first.")
    n = len(live)
    nlist = int(plan.nlist)
    code_size = int(faiss.extract_index_ivf(index).code_size)
    rng = np.random.default_rng([seed, n])
    m = min(sample, n, max(50, n // 10))
    picked = np.sort(rng.choice(live, size=m, replace=False))
    v = np.ascontiguousarray(vectors_get(picked), dtype=np.float32)
    dim = v.shape[1]
    queries = _truth(
        np.concatenate([v, text_like(v, rng)]),
        np.concatenate([picked, np.full(m, -1, np.int64)]),
        m,
        live,
        vectors_get,
        k,
    )
    depths: tuple[int | None, ...] = (None,)
    if not plan.exact_scores:
        depths = tuple(sorted({min(d, n) for d in RERANK_LADDER if d >= k})) or (min(k, n),)
    bitmap = np.packbits(queries.allowed, bitorder="little")

    def cost(nprobe: int, depth: int | None) -> float:
        return setting_cost(plan, n, code_size, dim, nprobe, depth)

    measured: dict[tuple[int, int | None], tuple[float, float, float]] = {}
    budget_hit = False

    def measure(nprobe: int, ceiling: float) -> bool:
        """Measure every depth at ``nprobe`` cheaper than ``ceiling``; False when the budget refused."""
        nonlocal budget_hit
        todo = [d for d in depths if cost(nprobe, d) < ceiling]
        if not todo:
            return True
        if measured and time.monotonic() - started > budget_s:
            budget_hit = True
            return False
        for depth, recalls in zip(todo, _recalls(index, plan, queries, vectors_get, bitmap, nprobe, todo, k)):
            measured[(nprobe, depth)] = recalls
            log.debug("nprobe %d, rerank %s: R@%d %.4f (image %.4f, text %.4f)", nprobe, depth, k, *recalls)
        return True

    def passing() -> list[tuple[int, int | None]]:
        return [s for s, (_, img, txt) in measured.items() if img >= target and txt >= target]

    def best_cost() -> float:
        return min((cost(*s) for s in passing()), default=math.inf)

    ladder = [1 << i for i in range(nlist.bit_length()) if 1 << i < nlist] + [nlist]
    last_failing = 0
    for nprobe in ladder:
        if cost(nprobe, depths[0]) >= best_cost() or not measure(nprobe, best_cost()):
            break
        if not passing():
            last_failing = nprobe
    if passing():
        lo, hi = last_failing, min(passing(), key=lambda s: cost(*s))[0]
        for _ in range(REFINE_STEPS):
            mid = (lo + hi) // 2
            if mid <= lo:
                break
            before = best_cost()
            if not measure(mid, before):
                break
            if best_cost() < before:
                hi = mid
            else:
                lo = mid
    if passing():
        chosen = min(passing(), key=lambda s: (cost(*s), s[0]))
    else:
        chosen = min(measured, key=lambda s: (-min(measured[s][1:]), cost(*s)))
    recall, image_recall, text_recall = measured[chosen]
    return Tuning(
        nprobe=chosen[0],
        rerank=chosen[1],
        target=target,
        recall=round(recall, 6),
        image_recall=round(image_recall, 6),
        text_recall=round(text_recall, 6),
        queries=len(queries.q),
        seconds=round(time.monotonic() - started, 3),
        met=image_recall >= target and text_recall >= target,
        measured_at=round(time.time(), 3),
        k=k,
        n=n,
        factory=plan.factory,
        cost=cost(*chosen),
        budget_hit=budget_hit,
    )


def describe(t: Tuning) -> str:
    """One line for status: the setting, its measured recall and whether it met the target."""
    setting = f"nprobe {t.nprobe}" + (f", re-rank {t.rerank}" if t.rerank else " (exact scores)")
    line = f"{setting}: R@{t.k} {t.recall:.3f} measured on {t.queries:,} held-out queries (target {t.target:g})"
    if not t.met:
        line += (
            f"; target NOT met (image {t.image_recall:.3f}, text {t.text_recall:.3f})"
            + (", tuning stopped at its time budget" if t.budget_hit else "")
            + ": a finer index (more lists, SQ8 or Flat codes) or a lower target is needed"
        )
    return line


def _truth(q: np.ndarray, own: np.ndarray, n_image: int, live: np.ndarray, vectors_get: VectorsGet, k: int) -> _Queries:
    """Exact top-k of each query over the ``live`` ids (sorted), leaving out each query's ``own`` id."""
    nq = len(q)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_i = np.full((nq, k), -1, np.int64)
    rows = np.arange(nq)[:, None]
    for start in range(0, len(live), _TRUTH_CHUNK):
        chunk = live[start : start + _TRUTH_CHUNK]
        scores = q @ np.asarray(vectors_get(chunk), dtype=np.float32).T  # (nq, c)
        pos = np.minimum(np.searchsorted(chunk, own), len(chunk) - 1)
        hit = np.flatnonzero(chunk[pos] == own)
        scores[hit, pos[hit]] = -np.inf
        if scores.shape[1] > k:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            cand_s, cand_i = scores[rows, part], chunk[part]
        else:
            cand_s, cand_i = scores, np.broadcast_to(chunk, scores.shape)
        all_s = np.concatenate([best_s, cand_s], axis=1)
        all_i = np.concatenate([best_i, cand_i], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = all_s[rows, top], all_i[rows, top]
    best_i[~np.isfinite(best_s)] = -1
    expected = np.where(own >= 0, min(k, len(live) - 1), min(k, len(live)))
    kth = best_s[np.arange(nq), np.maximum(expected - 1, 0)]
    allowed = np.zeros(int(live[-1]) + 1, bool)
    allowed[live] = True
    return _Queries(q, own, n_image, best_i, kth, expected, allowed)


def _recalls(
    index, plan: IndexPlan, qs: _Queries, vectors_get: VectorsGet, bitmap: np.ndarray, nprobe: int, depths: list, k: int
) -> list[tuple[float, float, float]]:
    """(R@k of all queries, of image queries, of text queries) per re-rank depth, from one search."""
    selector = faiss_plan.bitmap_selector(bitmap)
    params = faiss_plan.search_params(plan, selector, nprobe=nprobe)
    kk = min(max(d or k for d in depths), index.ntotal)
    # one extra result, so dropping the query's own id still leaves kk (the engine masks it instead)
    dist, labels = index.search(qs.q, min(kk + 1, index.ntotal), params=params)
    del selector
    drop = labels == qs.own[:, None]
    order = np.argsort(drop, axis=1, kind="stable")[:, :kk]
    rows = np.arange(len(labels))[:, None]
    labels, dist = labels[rows, order], dist[rows, order]
    labels[drop[rows, order]] = -1
    if plan.exact_scores:
        return [_score(qs, labels[:, :k], np.where(labels[:, :k] >= 0, dist[:, :k], -np.inf), k)]
    exact = _exact_scores(qs.q, labels, vectors_get)
    out = []
    for depth in depths:
        s = exact[:, :depth]
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        out.append(_score(qs, labels[:, :depth][rows, top], s[rows, top], k))
    return out


def _exact_scores(q: np.ndarray, labels: np.ndarray, vectors_get: VectorsGet) -> np.ndarray:
    """Exact inner products of each query with its candidate ids (-inf where there is none)."""
    out = np.full(labels.shape, -np.inf, np.float32)
    for start in range(0, len(labels), _RERANK_QUERIES):
        block = labels[start : start + _RERANK_QUERIES]
        valid = block >= 0
        uniq, inv = np.unique(block[valid], return_inverse=True)
        if not len(uniq):
            continue
        x = np.asarray(vectors_get(uniq), dtype=np.float32)
        which = np.nonzero(valid)
        sc = np.einsum("ij,ij->i", x[inv], q[start + which[0]])
        out[start + which[0], which[1]] = sc
    return out


def _score(qs: _Queries, answers: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float, float]:
    """Tie-aware R@k: a live answer counts if it is a true neighbour or scores at least the k-th true score."""
    valid = (answers >= 0) & (answers < len(qs.allowed))
    valid[valid] = qs.allowed[answers[valid]]
    known = (answers[:, :, None] == qs.truth[:, None, :]).any(axis=2)
    tied = scores >= (qs.kth[:, None] - _TIE_TOL)
    hits = np.minimum((valid & (known | tied)).sum(axis=1), qs.expected)
    per = np.where(qs.expected > 0, hits / np.maximum(qs.expected, 1), 1.0)
    return float(per.mean()), float(per[: qs.n_image].mean()), float(per[qs.n_image :].mean())
