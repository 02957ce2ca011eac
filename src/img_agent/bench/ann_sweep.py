"""The ANN sweep with raw faiss: which index reaches which recall at which latency and memory.

Every plan of :mod:`img_agent.bench.ann_plans` is built once and evaluated on every query set.
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
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from img_agent.bench import report
from img_agent.bench.ann_analysis import summary_from_rows
from img_agent.bench.ann_plans import (
    Plan, SweepConfig, count_evaluations, default_grid, label, make_plans, plan_labels, plans_for,
)
from img_agent.bench.common import Progress, ProgressBar, command_line, write_json, write_result
from img_agent.bench.data import Dataset, make_dataset
from img_agent.bench.metrics import Timer, recall_table, time_single_queries
from img_agent.index.faiss_plan import index_bytes

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# index construction


def _metric(ds: Dataset) -> int:
    import faiss

    return faiss.METRIC_INNER_PRODUCT if ds.metric == "ip" else faiss.METRIC_L2


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
    """Exact re-ranking of candidate ids (nq, C) with the float vectors; returns (nq, k) ids.

    The engine does the same from its float vector store (memory-mapped rows read by id).
    """
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


def run_sweep(
    ds: Dataset,
    cfg: SweepConfig,
    *,
    progress: Progress | None = None,
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
    plans = make_plans(cfg, ds.n, ds.dim)
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
# the benchmark


def run(options: Any) -> Path:
    """``bench ann``: the sweep at every size and data kind; writes ann.json / ann.md / plots, returns ann.md.

    After each size the results so far are written, and after each plan the rows so far go to
    ``ann.partial.json`` (kept on ``options.resume`` when the data is the same, removed when done).
    """
    t0 = time.time()
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    sizes = options.n or ([3000] if options.quick else [100_000])
    nq = options.queries or (50 if options.quick else 1000)
    query_kinds = tuple(options.query_kind or ("image", "text"))
    cfg = SweepConfig.quick() if options.quick else SweepConfig()
    cfg.families = tuple(options.families)
    cfg.threads = options.threads
    for attr in ("nlists", "pq_m", "pq_bits", "lsh_bits"):
        if getattr(options, attr, None):
            setattr(cfg, attr, tuple(getattr(options, attr)))
    if getattr(options, "ivf_codecs", None):
        cfg.ivf_codecs = tuple(c.strip() for c in options.ivf_codecs.split(",") if c.strip())
    if getattr(options, "ivf_quantizer", None):
        cfg.ivf_quantizers = tuple(options.ivf_quantizer)
    result = report.new_result("ann", command=command_line(options), quick=options.quick, config=asdict(cfg))
    result["runs"] = []
    md = out / "ann.md"
    for kind in ["file"] if options.data else list(options.kind):
        for n in sizes:
            log.info("ann: data %s n=%d", kind, n)
            ds = make_dataset(
                n=n, nq=nq, dim=options.dim, kind=kind if kind != "file" else "clip", query_kinds=query_kinds,
                seed=options.seed, data=options.data, query_data=options.query_data, metric=options.metric,
            )
            plans = plans_for(ds, cfg)
            partial = out / "ann.partial.json"
            key = {"name": ds.name, "n": ds.n, "dim": ds.dim, "seed": options.seed, "nq": nq,
                   "queries": [q.name for q in ds.queries], "data": str(options.data) if options.data else None}
            done_rows = _load_partial(partial, key) if getattr(options, "resume", False) else []
            bar = ProgressBar(count_evaluations(plans, len(ds.queries)), f"ann {ds.name} N={ds.n:,}",
                              not options.no_progress)

            def save(rows: list[dict], key=key, partial=partial) -> None:
                write_json(partial, {"key": key, "rows": rows})

            try:
                rows = run_sweep(ds, cfg, progress=bar, done_rows=done_rows, on_plan=save)
            finally:
                bar.close()
            partial.unlink(missing_ok=True)
            run_ = {
                "dataset": {"name": ds.name, **ds.info},
                "query_sets": [{"name": q.name, **q.info} for q in ds.queries],
                "rows": rows,
                "summary": summary_from_rows(rows, ds.n, [q.name for q in ds.queries], dim=ds.dim),
            }
            for qs in run_["query_sets"]:
                qs["plots"] = report.ann_plots(run_, qs["name"], out, f"ann_{ds.name}_{ds.n}_{qs['name']}")
            result["runs"].append(run_)
            del ds
            report.finish_result(result, t0)
            # after each size, so that the sizes done survive an interruption
            md = write_result(out, "ann", result, report.ann_markdown(result))
    return md


def _load_partial(path: Path, key: dict) -> list[dict]:
    """Rows of an interrupted sweep on the same data, or [] (with a note) if there are none."""
    if not path.exists():
        log.info("nothing to resume in %s", path)
        return []
    saved = json.loads(path.read_text())
    if saved.get("key") != key:
        log.warning("%s holds rows of another run (%s); starting afresh", path, saved.get("key"))
        return []
    log.info("resuming: %d rows kept from %s", len(saved.get("rows", [])), path)
    return saved.get("rows", [])
