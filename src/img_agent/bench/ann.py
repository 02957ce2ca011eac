"""ANN sweep with raw faiss: which index reaches which recall at which latency and memory.

Families (all with the dataset's metric: inner product on unit vectors = cosine, or L2):

- ``Flat``  — exact brute force, the baseline every speed-up is measured against;
- ``LSH``   — faiss ``IndexLSH`` (random rotation + thresholds, Hamming search) over code bits;
- ``PQ``    — exhaustive product quantization, sub-quantizers ``m`` × bits;
- ``IVF``   — ``IVF{nlist},{Flat|SQ8|PQ{m}}`` over nlist × nprobe; the coarse k-means is trained
  once per nlist and shared by the codecs (same centroids, as ``merge`` would keep them);
- ``HNSW``  — ``HNSW{M}`` over efSearch.

Compressed codecs (LSH, PQ, SQ8, IVF-PQ) are also measured **with exact re-ranking**: fetch C
candidates from the index, re-score them with the float vectors (as the engine does from its
vector store) and keep the best k. ``rerank=C`` rows report that.

Measures per configuration (see :mod:`img_agent.bench.metrics` for the recall definitions):
R@1/@10/@100 (tie-aware set recall) and 1-R@1/@10/@100 (faiss's 1-recall@R) over all queries
from one batch search of width max(100, C); single-query p50/p99 latency at k=10 with one faiss
thread (as the engine serves); batch QPS (all threads, k=10, up to 200 queries); index bytes
(serialized size, ≈ resident size); train and add seconds.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from img_agent.bench.data import Dataset
from img_agent.bench.metrics import Timer, recall_table, time_single_queries

log = logging.getLogger(__name__)

EXACT_MAX_N = 50_000  # the lead's planned rule: exact search up to here
FAMILIES: tuple[str, ...] = ("Flat", "LSH", "PQ", "IVF", "HNSW")


# --------------------------------------------------------------------------------------------
# the engine's index rule (as planned by the lead) and helpers


def pow2_near(x: float) -> int:
    """The power of two nearest to ``x`` in log scale (at least 1)."""
    return 1 << max(0, int(round(math.log2(max(x, 1.0)))))


@dataclass(frozen=True)
class RuleChoice:
    """One index choice for a collection size: what the engine would build and how it searches."""

    index: str  # faiss factory string ("Flat" for exact)
    nlist: int = 0
    nprobe: int = 0
    rerank: int = 0  # candidates re-ranked exactly for k=10 (0 = none)

    @property
    def label(self) -> str:
        if self.index == "Flat":
            return "Flat (exact)"
        s = f"{self.index} nprobe={self.nprobe}"
        return s + (f" rerank={self.rerank}" if self.rerank else "")


def planned_rule(n: int, *, k: int = 10, rerank_factor: int = 10) -> RuleChoice:
    """The lead's planned rule: N ≤ 50k exact; else IVF{K},SQ8, K = 2^round(log2(4√N)),
    nprobe = max(16, K/64), exact re-rank of max(100, rerank_factor·k) candidates."""
    if n <= EXACT_MAX_N:
        return RuleChoice("Flat")
    nlist = pow2_near(4 * math.sqrt(n))
    return RuleChoice(f"IVF{nlist},SQ8", nlist, max(16, nlist // 64), max(100, rerank_factor * k))


# --------------------------------------------------------------------------------------------
# sweep configuration


@dataclass
class SweepConfig:
    """What to measure. ``None`` grids are derived from the dataset size (see :func:`default_grid`)."""

    k: int = 100  # width of the recall evaluation
    k_latency: int = 10  # k for latency and QPS
    latency_queries: int = 200
    latency_budget_s: float = 3.0  # per configuration; slow baselines stop early (>= 10 queries)
    latency_repeats: int = 2  # passes over the latency queries; the one with the lower p50 is kept
    qps_queries: int = 200
    threads: int = 0  # batch threads; 0 = all cores
    families: tuple[str, ...] = FAMILIES
    lsh_bits: tuple[int, ...] | None = None
    pq_m: tuple[int, ...] = (8, 16, 32, 64)
    pq_bits: tuple[int, ...] = (4, 8)
    nlists: tuple[int, ...] | None = None
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    max_probe_fraction: float = 1 / 8  # skip nprobe > nlist/8 (scans >12 % of the data: never useful)
    ivf_codecs: tuple[str, ...] = ("Flat", "SQ8", "PQ32")
    # coarse quantizer: "flat" (exact, scans nlist centroids per query) or "hnsw" (IVF{K}_HNSW32)
    ivf_quantizers: tuple[str, ...] = ("flat",)
    # candidates re-ranked exactly: 100 = the engine at k=10, 1000 = the engine at k=100 (max(100, 10·k))
    reranks: tuple[int, ...] = (0, 100, 1000)
    train_per_list: int = 64  # k-means training points per IVF list (faiss wants >= 39)
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: tuple[int, ...] = (16, 32, 64, 128, 256)
    include_rule: bool = True  # always add the planned rule's configuration

    @classmethod
    def quick(cls) -> "SweepConfig":
        """Seconds, not minutes: one or two settings per family (for tests and smoke runs)."""
        return cls(
            latency_queries=20,
            latency_budget_s=0.2,
            qps_queries=20,
            lsh_bits=(256,),
            pq_m=(16,),
            pq_bits=(4,),
            nlists=(64,),
            nprobes=(1, 8),
            ivf_codecs=("Flat", "SQ8", "PQ16"),
            reranks=(0, 100),
            ef_search=(16, 64),
            hnsw_m=16,
        )


def default_grid(cfg: SweepConfig, n: int, dim: int) -> SweepConfig:
    """Fill the size-dependent grids: nlist around 4√N (×½, ×1, ×2), LSH bits in multiples of dim."""
    out = SweepConfig(**{**asdict(cfg)})
    if out.nlists is None:
        k = pow2_near(4 * math.sqrt(n))
        out.nlists = tuple(sorted({max(4, k // 2), k, 2 * k}))
    # faiss needs >= nlist training points; keep >= 39 per list for sane k-means
    out.nlists = tuple(nl for nl in out.nlists if 39 * nl <= n) or (max(1, n // 39),)
    if out.lsh_bits is None:
        out.lsh_bits = (dim // 2, dim, 2 * dim, 4 * dim)
    out.pq_m = tuple(m for m in out.pq_m if dim % m == 0)
    return out


# --------------------------------------------------------------------------------------------
# index construction


def _metric(ds: Dataset) -> int:
    import faiss

    return faiss.METRIC_INNER_PRODUCT if ds.metric == "ip" else faiss.METRIC_L2


def index_bytes(index) -> int:
    """Serialized size of a faiss index without materialising it (≈ its resident size)."""
    import faiss

    total = [0]

    def write(buf: bytes) -> int:
        total[0] += len(buf)
        return len(buf)

    faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    return total[0]


def _add_chunked(index, x: np.ndarray, chunk: int = 65536, on_chunk: Callable[[], None] | None = None) -> None:
    for start in range(0, x.shape[0], chunk):
        index.add(x[start : start + chunk])
        if on_chunk:
            on_chunk()


def _train_sample(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    if size >= x.shape[0]:
        return x
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(x.shape[0], size=size, replace=False))
    return np.ascontiguousarray(x[idx])


@dataclass
class Built:
    """A built index plus how to search it with different settings."""

    family: str
    index_string: str
    index: object
    train_s: float
    add_s: float
    nbytes: int
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# searching with and without re-ranking


def rerank(ds: Dataset, xq: np.ndarray, cand: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    # the engine does the same from its float vector store (memmapped rows read by id)
    """Exact re-ranking of candidate ids (nq, C) with the float vectors; returns (nq, k) ids."""
    nq, c = cand.shape
    out = np.full((nq, k), -1, dtype=np.int64)
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        ids = cand[s:e]
        safe = np.where(ids >= 0, ids, 0)
        vecs = ds.xb[safe.ravel()].reshape(e - s, c, -1)
        if ds.metric == "ip":
            sc = np.einsum("qcd,qd->qc", vecs, xq[s:e])
        else:
            diff = vecs - xq[s:e, None, :]
            sc = -np.einsum("qcd,qcd->qc", diff, diff)
        sc[ids < 0] = -np.inf
        kk = min(k, c)
        top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if kk < c else np.tile(np.arange(c), (e - s, 1))
        order = np.take_along_axis(sc, top, axis=1).argsort(axis=1)[:, ::-1]
        best = np.take_along_axis(top, order, axis=1)
        res = np.take_along_axis(ids, best, axis=1)
        res[np.take_along_axis(sc, best, axis=1) == -np.inf] = -1
        out[s:e, :kk] = res
    return out


def _search_fn(index, params) -> Callable[[np.ndarray, int], np.ndarray]:
    def search(x: np.ndarray, k: int) -> np.ndarray:
        if params is None:
            _, ids = index.search(x, k)
        else:
            _, ids = index.search(x, k, params=params)
        return ids

    return search


def _params(family: str, setting: dict):
    import faiss

    if family == "IVF":
        nprobe = int(setting["nprobe"])
        if setting.get("quantizer") == "hnsw":
            # the HNSW quantizer must look at least nprobe centroids deep
            qp = faiss.SearchParametersHNSW(efSearch=max(64, 2 * nprobe))
            return faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=qp)
        return faiss.SearchParametersIVF(nprobe=nprobe)
    if family == "HNSW":
        return faiss.SearchParametersHNSW(efSearch=int(setting["efSearch"]))
    return None


# --------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Plan:
    """One index to build and the settings to evaluate on it."""

    family: str
    index_string: str
    settings: list[dict]
    reranks: tuple[int, ...]
    nlist: int = 0


def make_plans(cfg: SweepConfig, n: int) -> list[Plan]:
    """Every (index, settings) the sweep will measure, in build order."""
    plans: list[Plan] = []
    compressed_reranks = tuple(sorted(set(cfg.reranks)))
    if "Flat" in cfg.families:
        plans.append(Plan("Flat", "Flat", [{}], (0,)))
    if "LSH" in cfg.families:
        for bits in cfg.lsh_bits or ():
            plans.append(Plan("LSH", f"LSH{bits}", [{"bits": bits}], compressed_reranks))
    if "PQ" in cfg.families:
        for m in cfg.pq_m:
            for b in cfg.pq_bits:
                # "np": no polysemous training, which index_factory otherwise runs for PQ and which
                # costs ~10x the PQ training time without changing ADC search results
                plans.append(Plan("PQ", f"PQ{m}x{b}np", [{"m": m, "bits": b}], compressed_reranks))
    nlists = list(cfg.nlists or ())
    rule = planned_rule(n) if cfg.include_rule else None
    if rule is not None and rule.nlist and rule.nlist not in nlists and 39 * rule.nlist <= n:
        nlists.append(rule.nlist)
    if "IVF" in cfg.families or rule is not None and rule.nlist:
        for nlist in sorted(nlists):
            cap = max(1, int(nlist * cfg.max_probe_fraction))
            probes = sorted({p for p in cfg.nprobes if p <= cap} | ({rule.nprobe} if rule and rule.nlist == nlist else set()))
            codecs = list(cfg.ivf_codecs) if "IVF" in cfg.families else []
            if rule and rule.nlist == nlist and "SQ8" not in codecs:
                codecs.append("SQ8")
            for quant in cfg.ivf_quantizers if "IVF" in cfg.families else ("flat",):
                for codec in codecs if quant == "flat" else list(cfg.ivf_codecs):
                    rr = (0,) if codec == "Flat" else compressed_reranks
                    if rule and rule.nlist == nlist and codec == "SQ8" and quant == "flat":
                        rr = tuple(sorted(set(rr) | {0, rule.rerank}))
                    head = f"IVF{nlist}" + ("_HNSW32" if quant == "hnsw" else "")
                    factory = f"{head},{codec}" + ("np" if codec.startswith("PQ") else "")
                    settings = [{"nlist": nlist, "nprobe": p, **({"quantizer": quant} if quant != "flat" else {})}
                                for p in probes]
                    plans.append(Plan("IVF", factory, settings, rr, nlist))
    if "HNSW" in cfg.families:
        plans.append(
            Plan("HNSW", f"HNSW{cfg.hnsw_m}", [{"M": cfg.hnsw_m, "efSearch": e} for e in cfg.ef_search], (0,))
        )
    return plans


def _build(plan: Plan, ds: Dataset, cfg: SweepConfig, centroids: dict[int, tuple[np.ndarray, float]]) -> Built:
    import faiss

    d, metric = ds.dim, _metric(ds)
    train_s = add_s = 0.0
    extra: dict = {}
    if plan.family == "Flat":
        index = faiss.IndexFlatIP(d) if ds.metric == "ip" else faiss.IndexFlatL2(d)
    elif plan.family == "LSH":
        index = faiss.IndexLSH(d, int(plan.settings[0]["bits"]), True, True)
    elif plan.family == "HNSW":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, metric)
        index.hnsw.efConstruction = cfg.ef_construction
    else:
        index = faiss.index_factory(d, plan.index_string, metric)
    if plan.family == "IVF":
        nlist = plan.nlist
        sample = _train_sample(ds.xb, max(nlist, cfg.train_per_list * nlist))
        if nlist not in centroids:
            # the coarse k-means once per nlist (exact assignment), shared by every codec and quantizer
            coarse = faiss.index_factory(d, f"IVF{nlist},Flat", metric)
            with Timer() as t:
                coarse.train(sample)
            centroids[nlist] = (coarse.quantizer.reconstruct_n(0, nlist), t.s)
            del coarse
        cent, km_s = centroids[nlist]
        index.quantizer.add(cent)
        extra["kmeans_s"] = round(km_s, 3)
        extra["train_points"] = int(sample.shape[0])
        train_s += km_s  # the k-means is part of this index's training cost, even if shared here
        if not index.is_trained:  # the codec (SQ ranges, PQ codebooks); the quantizer is already trained
            with Timer() as t:
                index.train(sample)
            train_s += t.s
    elif not index.is_trained:
        sample = _train_sample(ds.xb, min(ds.n, 100_000))
        with Timer() as t:
            index.train(sample)
        train_s += t.s
    with Timer() as t:
        _add_chunked(index, ds.xb)
    add_s = t.s
    return Built(plan.family, plan.index_string, index, train_s, add_s, index_bytes(index), extra)


def _row(built: Built, plan: Plan, setting: dict, rr: int, ds: Dataset, qname: str) -> dict:
    return {
        "queries": qname,
        "family": plan.family,
        "index": plan.index_string,
        "params": {**setting, **({"rerank": rr} if rr else {})},
        "rerank": rr,
        "train_s": round(built.train_s, 3),
        "add_s": round(built.add_s, 3),
        "index_bytes": built.nbytes,
        # a re-ranking index also needs the float vectors (the engine keeps them on disk, mmapped)
        "float_store_bytes": ds.n * ds.dim * 4 if rr else 0,
        **built.extra,
    }


def label(row: dict) -> str:
    """Human label of a result row, e.g. ``IVF1024,SQ8 nprobe=16 rerank=100``."""
    p = row["params"]
    parts = [row["index"]]
    if "nprobe" in p:
        parts.append(f"nprobe={p['nprobe']}")
    if "efSearch" in p:
        parts.append(f"efSearch={p['efSearch']}")
    if row.get("rerank"):
        parts.append(f"rerank={row['rerank']}")
    return " ".join(parts)


def count_evaluations(plans: list[Plan], n_query_sets: int = 1) -> int:
    """How many result rows the plans produce (for a progress bar)."""
    return sum(len(p.settings) * len(p.reranks) for p in plans) * n_query_sets


def plans_for(ds: Dataset, cfg: SweepConfig) -> list[Plan]:
    return make_plans(default_grid(cfg, ds.n, ds.dim), ds.n)


def plan_labels(plan: Plan, query_sets: list[str]) -> set[tuple[str, str]]:
    """(queries, label) of every row ``plan`` produces (to skip plans already measured)."""
    return {
        (q, label({"index": plan.index_string, "params": st, "rerank": rr}))
        for st in plan.settings
        for rr in plan.reranks
        for q in query_sets
    }


def run_sweep(
    ds: Dataset,
    cfg: SweepConfig,
    *,
    progress: Callable[[int, str], None] | None = None,
    done_rows: list[dict] | None = None,
    on_plan: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Build every planned index once, evaluate every setting on every query set of ``ds``.

    ``progress(advance, message)`` is called before each build and after each row. Returns the
    result rows (see the module doc); ``speedup_p50`` compares with the Flat row of the same queries.
    ``done_rows`` (from an interrupted run on the same data) are kept, and plans whose rows are all
    among them are skipped; ``on_plan(rows so far)`` is called after each plan (to save progress).
    """
    import faiss

    cfg = default_grid(cfg, ds.n, ds.dim)
    plans = make_plans(cfg, ds.n)
    threads = cfg.threads or os.cpu_count() or 1
    qnames = [q.name for q in ds.queries]
    rows: list[dict] = []
    have = {(r["queries"], r["label"]) for r in done_rows or []}
    centroids: dict[int, tuple[np.ndarray, float]] = {}
    try:
        for plan in plans:
            want = plan_labels(plan, qnames)
            if want <= have:
                rows += [r for r in done_rows or [] if (r["queries"], r["label"]) in want]
                if progress:
                    progress(len(want), f"kept {plan.index_string}")
                continue
            faiss.omp_set_num_threads(threads)
            if progress:
                progress(0, f"build {plan.index_string}")
            built = _build(plan, ds, cfg, centroids)
            for setting in plan.settings:
                search = _search_fn(built.index, _params(plan.family, setting))
                width = max(cfg.k, max(plan.reranks))
                for qs in ds.queries:
                    faiss.omp_set_num_threads(threads)
                    base = search(qs.xq, width)
                    for rr in plan.reranks:
                        row = _row(built, plan, setting, rr, ds, qs.name)
                        ids = rerank(ds, qs.xq, base[:, :rr], cfg.k) if rr else base[:, : cfg.k]
                        row.update(recall_table(ids, ds.xb, qs, ds.metric))

                        def one(x: np.ndarray, rr=rr) -> np.ndarray:
                            if rr:
                                return rerank(ds, x, search(x, rr), cfg.k_latency)
                            return search(x, cfg.k_latency)

                        faiss.omp_set_num_threads(1)
                        row.update(
                            time_single_queries(
                                one, qs.xq, max_queries=cfg.latency_queries, budget_s=cfg.latency_budget_s,
                                repeats=cfg.latency_repeats,
                            )
                        )
                        faiss.omp_set_num_threads(threads)
                        nqps = min(cfg.qps_queries, qs.nq)
                        with Timer() as t:
                            one(qs.xq[:nqps])
                        row["qps"] = round(nqps / max(t.s, 1e-9), 1)
                        row["label"] = label(row)
                        rows.append(row)
                        if progress:
                            progress(1, f"{qs.name}: {row['label']}")
            del built
            gc.collect()
            if on_plan:
                on_plan(rows)
    finally:
        faiss.omp_set_num_threads(threads)
    for qs in ds.queries:
        flat = next((r for r in rows if r["family"] == "Flat" and r["queries"] == qs.name), None)
        if flat:
            for r in rows:
                if r["queries"] == qs.name:
                    r["speedup_p50"] = round(flat["p50_ms"] / r["p50_ms"], 2) if r["p50_ms"] > 0 else None
    return rows


# --------------------------------------------------------------------------------------------
# analysis: the rule against the targets, and the cheapest configurations that meet them


@dataclass(frozen=True)
class Targets:
    recall10: float = 0.95
    speedup: float = 50.0
    memory_bytes_at_1m: float = 0.6e9


def find_row(rows: list[dict], choice: RuleChoice, queries: str, *, rerank: int | None = None) -> dict | None:
    """The sweep row measuring ``choice`` (exact Flat, or IVF with its nprobe and rerank)."""
    want_rr = choice.rerank if rerank is None else rerank
    for r in rows:
        if r["queries"] != queries:
            continue
        if choice.index == "Flat" and r["family"] == "Flat":
            return r
        if r["index"] == choice.index and r["params"].get("nprobe") == choice.nprobe and r["rerank"] == want_rr:
            return r
    return None


def check_rule(rows: list[dict], n: int, queries: str, targets: Targets = Targets()) -> dict:
    """Does the planned rule meet the targets at this size? Memory target scales linearly to 1M."""
    choice = planned_rule(n)
    row = find_row(rows, choice, queries)
    out: dict = {"n": n, "queries": queries, "rule": choice.label, "measured": row is not None}
    if row is None:
        return out
    mem_1m = row["index_bytes"] * 1_000_000 / n
    out.update(
        {
            "R@10": row.get("R@10"),
            "R@100_same_config": row.get("R@100"),
            "p50_ms": row["p50_ms"],
            "p99_ms": row["p99_ms"],
            "speedup_p50": row.get("speedup_p50"),
            "index_bytes": row["index_bytes"],
            "index_bytes_scaled_to_1m": int(mem_1m),
            "meets_recall": (row.get("R@10") or 0) >= targets.recall10,
            "meets_speedup": (row.get("speedup_p50") or 0) >= targets.speedup,
            "meets_memory": mem_1m <= targets.memory_bytes_at_1m,
        }
    )
    if choice.nlist:
        big = find_row(rows, choice, queries, rerank=1000)
        if big:
            out["R@100_rerank1000"] = big.get("R@100")
    return out


def frontier(
    rows: list[dict], *, recall_key: str = "R@10", floor: float = 0.95, max_bytes: float | None = None
) -> list[dict]:
    """Per (queries, index string), the fastest setting with ``recall_key`` >= floor (index ≤ max_bytes)."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        if (r.get(recall_key) or 0) < floor:
            continue
        if max_bytes is not None and r["index_bytes"] > max_bytes:
            continue
        key = (r["queries"], r["index"])
        if key not in best or r["p50_ms"] < best[key]["p50_ms"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r["queries"], r["p50_ms"]))


def min_nprobe(rows: list[dict], *, floor: float = 0.95, recall_key: str = "R@10") -> list[dict]:
    """Per IVF index and re-rank setting: the smallest nprobe reaching ``floor`` on every query set,
    with its latency per query set (what an nprobe rule has to provide)."""
    series: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in rows:
        if r["family"] != "IVF":
            continue
        series.setdefault((r["index"], r["rerank"]), {}).setdefault(r["queries"], []).append(r)
    out = []
    def order(kv):
        (index, rr), by_q = kv
        return (next(iter(by_q.values()))[0]["params"]["nlist"], index, rr)

    for (index, rr), by_q in sorted(series.items(), key=order):
        entry: dict = {"index": index, "rerank": rr, "nlist": next(iter(by_q.values()))[0]["params"]["nlist"],
                       "index_bytes": next(iter(by_q.values()))[0]["index_bytes"]}
        need = 0
        for q, rs in by_q.items():
            ok = sorted((r for r in rs if (r.get(recall_key) or 0) >= floor), key=lambda r: r["params"]["nprobe"])
            if not ok:
                need = None
                entry[q] = {"best": max(r.get(recall_key) or 0 for r in rs)}
                continue
            r = ok[0]
            entry[q] = {"nprobe": r["params"]["nprobe"], recall_key: r.get(recall_key), "p50_ms": r["p50_ms"],
                        "speedup_p50": r.get("speedup_p50")}
            if need is not None:
                need = max(need, r["params"]["nprobe"])
        entry["nprobe_all"] = need
        if need is not None:
            entry["p50_ms_at_nprobe_all"] = {
                q: next((r["p50_ms"] for r in rs if r["params"]["nprobe"] == need), None) for q, rs in by_q.items()
            }
            entry["recall_at_nprobe_all"] = {
                q: next((r.get(recall_key) for r in rs if r["params"]["nprobe"] == need), None) for q, rs in by_q.items()
            }
        out.append(entry)
    return out


def sweep_summary(rows: list[dict], ds: Dataset) -> dict:
    """Analysis block stored next to the rows in the JSON result."""
    return summary_from_rows(rows, ds.n, [qs.name for qs in ds.queries])


def summary_from_rows(rows: list[dict], n: int, query_sets: list[str]) -> dict:
    """:func:`sweep_summary` from the stored rows alone (``bench report`` re-renders with it)."""
    return {
        "rule_check": [check_rule(rows, n, q) for q in query_sets],
        "min_nprobe_R10_0.95": min_nprobe(rows),
        "fastest_meeting_R10_0.95": [
            {"queries": r["queries"], "label": r["label"], "p50_ms": r["p50_ms"], "R@10": r["R@10"],
             "index_bytes": r["index_bytes"]}
            for r in frontier(rows)
        ],
    }
