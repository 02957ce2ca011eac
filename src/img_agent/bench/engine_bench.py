"""Engine benchmark: the real :class:`~img_agent.index.engine.Engine`, not raw faiss.

Vectors go in through ``Engine.add_vectors`` (no model is loaded: the store is opened with the
512-d ``ViT-B-32`` model name and ``add_vectors`` never encodes). The scenario, at each N:

1. **bulk add** N − 10k vectors in batches of 10k with auto-merge off → add throughput
   (vectors/s, durable: fsync + SQLite commit) as the exact buffer grows;
2. **first merge** builds the trained main index for that size (the ``auto`` rule);
3. **search** through ``search_vectors``: single-query p50/p99 (k=10) and recall@10/@100
   (tie-aware set recall, batch search) against exact search over the live vectors of the same
   engine state, for image-like and text-like queries; exact flat p50 on the same vectors (faiss,
   one thread) as the baseline;
4. add 10k → **merge** them into the trained index (no retraining), timed; search again at N;
5. **buffer effect**: latency with 1k … 50k vectors waiting in the exact buffer;
6. **remove visibility**: remove each query's top hit, search again at once, count reappearances;
   latency with 1 % removed (bitmap selector);
7. **rebuild** (retrain on live vectors, drop removed), timed; search again;
8. **memory and disk**: a fresh process opens the store and serves queries; its RSS (anonymous
   vs file-backed) and the open time are reported, with the size of every file in the store.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.common import Progress, ProgressBar, command_line, no_progress, write_json
from img_agent.bench.data import QuerySet
from img_agent.bench.metrics import Timer, percentile, recall_table, rss_bytes, time_single_queries
from img_agent.bench.synthetic import synthetic

MODEL_FOR_512 = "ViT-B-32"  # a 512-d model name for the store; never loaded by add_vectors
BATCH = 10_000
MERGE_BATCH = 10_000
BUFFER_STEPS = (1_000, 5_000, 10_000, 20_000, 50_000)


class LiveMirror:
    """The benchmark's mirror of the engine state: every vector by id, and which ids are live."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.live = np.zeros(len(x), dtype=bool)

    def exact(self, xq: np.ndarray, k: int, name: str, chunk: int = 131_072) -> QuerySet:
        """Exact top-k over the live vectors, chunk by chunk (no full copy of a 1M set)."""
        import faiss

        best_s = np.full((len(xq), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(xq), 0), dtype=np.int64)
        for start in range(0, len(self.x), chunk):
            ids = start + np.flatnonzero(self.live[start : start + chunk])
            if not len(ids):
                continue
            rows = self.x[start : start + chunk] if len(ids) == min(chunk, len(self.x) - start) else self.x[ids]
            kk = min(k, len(ids))
            scores, local = faiss.knn(xq, np.ascontiguousarray(rows), kk, metric=faiss.METRIC_INNER_PRODUCT)
            best_s = np.concatenate([best_s, scores], axis=1)
            best_i = np.concatenate([best_i, ids[local]], axis=1)
            if best_s.shape[1] > k:
                top = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
                best_s = np.take_along_axis(best_s, top, axis=1)
                best_i = np.take_along_axis(best_i, top, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        return QuerySet(name, xq, np.take_along_axis(best_i, order, axis=1),
                        np.take_along_axis(best_s, order, axis=1))


def hit_ids(results, k: int) -> np.ndarray:
    """The ids of ``search_vectors`` results as an (nq, k) array, -1 where a query got fewer than k."""
    out = np.full((len(results), k), -1, dtype=np.int64)
    for i, hits in enumerate(results):
        ids = [h.id for h in hits][:k]
        out[i, : len(ids)] = ids
    return out


def _measure(engine, mirror: LiveMirror, queries: dict[str, np.ndarray], *, lat_queries: int, budget_s: float,
             recall: bool = True) -> dict:
    """Latency (single query, k=10) and recall@10/@100 of the engine in its current state."""
    out: dict = {}
    for name, xq in queries.items():
        res: dict = {}
        lat = time_single_queries(lambda q: engine.search_vectors(q, 10), xq, max_queries=lat_queries,
                                  budget_s=budget_s, repeats=2)
        res.update({f"search_{k}": v for k, v in lat.items()})
        # the index part alone, without the catalog lookups of the hits
        lat_core = time_single_queries(lambda q: engine.search_ids(q, 10), xq, max_queries=lat_queries,
                                       budget_s=budget_s, repeats=2)
        res["core_p50_ms"] = lat_core["p50_ms"]
        if recall:
            for k in (10, 100):
                qs = mirror.exact(xq, k, name)
                with Timer() as t:
                    found = engine.search_vectors(xq, k)
                ids = hit_ids(found, k)
                table = recall_table(ids, mirror.x, qs, ks=(k,), rs=(1,) if k == 10 else ())
                res.update(table)
                res[f"batch_qps_k{k}"] = round(len(xq) / max(t.s, 1e-9), 1)
                res[f"full_k{k}"] = float(np.mean((ids >= 0).sum(axis=1) == min(k, int(mirror.live.sum()))))
        out[name] = res
    return out


def _flat_p50(mirror: LiveMirror, queries: dict[str, np.ndarray], lat_queries: int, budget_s: float) -> dict:
    """Exact flat search on the same live vectors, one thread, k=10: the baseline of the speed-up."""
    import faiss

    index = faiss.IndexFlatIP(mirror.x.shape[1])
    ids = np.flatnonzero(mirror.live)
    for start in range(0, len(ids), 131_072):
        index.add(np.ascontiguousarray(mirror.x[ids[start : start + 131_072]]))
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return {name: time_single_queries(lambda q: index.search(q, 10), xq, max_queries=lat_queries,
                                          budget_s=budget_s, repeats=2) for name, xq in queries.items()}
    finally:
        faiss.omp_set_num_threads(old)
        del index


def _disk(folder: Path) -> dict:
    sizes: dict[str, int] = {}
    for p in folder.rglob("*"):
        if p.is_file():
            key = "index/" + p.name.split("-")[0] if p.parent.name == "index" else p.name
            sizes[key] = sizes.get(key, 0) + p.stat().st_size
    sizes["total"] = sum(v for k, v in sizes.items())
    return sizes


def _add(engine, mirror: LiveMirror, start: int, stop: int, batch: int = BATCH) -> list[dict]:
    """add_vectors rows [start, stop) in batches; returns per-batch timings."""
    rows = []
    for s in range(start, stop, batch):
        e = min(stop, s + batch)
        paths = [f"/bench/img_{i:08d}.jpg" for i in range(s, e)]
        buf_before = engine.status().buffer if s == start else rows[-1]["buffer_after"]
        with Timer() as t:
            ids = engine.add_vectors(mirror.x[s:e], paths)
        if ids[0] != s or ids[-1] != e - 1:
            raise RuntimeError(f"engine assigned ids {ids[0]}..{ids[-1]}, expected {s}..{e - 1}")
        mirror.live[s:e] = True
        rows.append({"rows": e - s, "buffer_before": buf_before, "buffer_after": buf_before + (e - s),
                     "seconds": round(t.s, 4), "vectors_per_s": round((e - s) / max(t.s, 1e-9), 1)})
    return rows


def run_one(
    n: int,
    *,
    nq: int,
    seed: int = 0,
    kind: str = "clip",
    dim: int = 512,
    store: Path,
    index_string: str = "auto",
    lat_queries: int = 200,
    budget_s: float = 5.0,
    buffer_steps: tuple[int, ...] = BUFFER_STEPS,
    merge_batch: int = MERGE_BATCH,
    progress: Progress = no_progress,
) -> dict:
    """The whole scenario at one size; returns a JSON-able dict. ``store`` must not exist yet."""
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    if store.exists():
        raise FileExistsError(f"{store} exists; the engine benchmark needs a fresh store folder")
    extra = merge_batch + max(buffer_steps, default=0)
    progress(0, f"generating {n + extra:,} vectors")
    mirror = LiveMirror(synthetic(n + extra, dim, kind=kind, seed=seed))  # type: ignore[arg-type]
    queries = {q: synthetic(nq, dim, kind=kind, seed=seed, query=q, n_db=n) for q in ("image", "text")}  # type: ignore[arg-type]
    settings = Settings(data_dir=store, model=MODEL_FOR_512, index_string=index_string, merge_threshold=10**12)
    out: dict = {"n": n, "dim": dim, "kind": kind, "nq": nq, "index_string": index_string}
    base = n - merge_batch
    rss0 = rss_bytes()
    with Timer() as t_open:
        engine = Engine.open(settings)
    out["open_new_s"] = round(t_open.s, 3)
    try:
        # 1. bulk add with auto-merge off
        progress(0, f"add_vectors {base:,}")
        with Timer() as t:
            adds = _add(engine, mirror, 0, base)
        rates = [a["vectors_per_s"] for a in adds]
        out["bulk_add"] = {
            "vectors": base, "seconds": round(t.s, 2), "vectors_per_s": round(base / max(t.s, 1e-9), 1),
            "first_batch_per_s": rates[0], "last_batch_per_s": rates[-1], "batches": adds,
        }
        progress(1, "bulk add")
        # 2. first merge builds the trained index
        progress(0, f"first merge (build) at {base:,}")
        with Timer() as t:
            rep = engine.merge()
        out["initial_build"] = {"seconds": round(t.s, 2), "report": rep.model_dump(), "status": _status(engine)}
        progress(1, "initial build")
        # 3. search at N - merge_batch, buffer empty
        out["search_base"] = _measure(engine, mirror, queries, lat_queries=lat_queries, budget_s=budget_s)
        progress(1, "search (base)")
        # 4. merge a 10k buffer into the trained index
        _add(engine, mirror, base, n)
        out["search_with_10k_buffer"] = _measure(engine, mirror, queries, lat_queries=lat_queries,
                                                 budget_s=budget_s)
        with Timer() as t:
            rep = engine.merge()
        out["merge_10k"] = {"seconds": round(t.s, 3), "report": rep.model_dump(), "status": _status(engine)}
        progress(1, "merge 10k")
        # headline: at N, buffer empty; exact flat baseline on the same vectors
        out["search_n"] = _measure(engine, mirror, queries, lat_queries=lat_queries, budget_s=budget_s)
        out["flat"] = _flat_p50(mirror, queries, min(lat_queries, 50), budget_s)
        for name in queries:
            f50 = out["flat"][name]["p50_ms"]
            s50 = out["search_n"][name]["search_p50_ms"]
            out["search_n"][name]["speedup_vs_flat_p50"] = round(f50 / s50, 2) if s50 else None
        progress(1, "search (N)")
        # 5. buffer size effect (image queries, latency only)
        steps = []
        have = 0
        pos = n
        for b in sorted(buffer_steps):
            _add(engine, mirror, pos, pos + (b - have))
            pos += b - have
            have = b
            m = _measure(engine, mirror, {"image": queries["image"]}, lat_queries=lat_queries, budget_s=budget_s,
                         recall=False)["image"]
            steps.append({"buffer": b, "p50_ms": m["search_p50_ms"], "p99_ms": m["search_p99_ms"],
                          "core_p50_ms": m.get("core_p50_ms")})
        out["buffer_effect"] = [{"buffer": 0, "p50_ms": out["search_n"]["image"]["search_p50_ms"],
                                 "p99_ms": out["search_n"]["image"]["search_p99_ms"],
                                 "core_p50_ms": out["search_n"]["image"].get("core_p50_ms")}] + steps
        if have:
            with Timer() as t:
                rep = engine.merge()
            out["merge_buffer_steps"] = {"vectors": have, "seconds": round(t.s, 3)}
        progress(1, "buffer effect")
        # 6. remove visibility
        out["remove"] = _remove_visibility(engine, mirror, queries["image"][: min(100, nq)])
        frac = max(1, int(0.01 * int(mirror.live.sum())))
        rng = np.random.default_rng(seed + 99)
        victims = rng.choice(np.flatnonzero(mirror.live), size=frac, replace=False)
        with Timer() as t:
            engine.remove(ids=[int(v) for v in victims])
        mirror.live[victims] = False
        out["remove"]["bulk_1pct"] = {"ids": int(frac), "seconds": round(t.s, 3)}
        out["search_after_remove_1pct"] = _measure(engine, mirror, {"image": queries["image"]},
                                                   lat_queries=lat_queries, budget_s=budget_s)
        progress(1, "remove")
        # 7. rebuild
        with Timer() as t:
            rep = engine.rebuild()
        out["rebuild"] = {"seconds": round(t.s, 2), "report": rep.model_dump(), "status": _status(engine)}
        out["search_after_rebuild"] = _measure(engine, mirror, queries, lat_queries=lat_queries, budget_s=budget_s)
        progress(1, "rebuild")
        main_bytes = engine.main_index_bytes()
        if main_bytes:  # 0: no main index (exact search over the buffer)
            out["main_index_bytes"] = main_bytes
        out["bench_process_rss_bytes"] = rss_bytes() - rss0
    finally:
        engine.close()
    out["disk_bytes"] = _disk(store)
    # 8. a fresh serving process
    progress(0, "serving probe")
    out["serving_probe"] = serving_probe(store, queries["text"][: min(200, nq)])
    progress(1, "serving probe")
    del mirror
    gc.collect()
    return out


def _status(engine) -> dict:
    s = engine.status()
    return {"live": s.live, "main": s.main, "buffer": s.buffer, "index": s.index, "nlist": s.nlist,
            "nprobe": s.nprobe, "rerank_candidates": s.rerank_candidates}


def _remove_visibility(engine, mirror: LiveMirror, xq: np.ndarray) -> dict:
    """Remove each query's top hit, then search at once: the removed id must be gone."""
    times, reappeared, short = [], 0, 0
    for q in xq:
        hits = engine.search_vectors(q[None, :], 10)[0]
        if not hits:
            continue
        victim = hits[0].id
        with Timer() as t:
            engine.remove(ids=[victim])
        times.append(t.s * 1e3)
        mirror.live[victim] = False
        again = engine.search_vectors(q[None, :], 10)[0]
        reappeared += any(h.id == victim for h in again)
        short += len(again) < min(10, int(mirror.live.sum()))
    return {"removed": len(times), "reappeared": reappeared, "short_results": short,
            "remove_p50_ms": round(percentile(times, 50), 3), "remove_p99_ms": round(percentile(times, 99), 3)}


_PROBE = r"""
import json, sys, time
import numpy as np
def rss():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out
t0 = time.perf_counter()
from img_agent.config import Settings
from img_agent.index.engine import Engine
t1 = time.perf_counter()
eng = Engine.open(Settings(data_dir=sys.argv[1], model=sys.argv[2]))
t2 = time.perf_counter()
before = rss()
q = np.load(sys.argv[3])
eng.search_vectors(q[:1], 10)
t3 = time.perf_counter()
lat = []
for row in q:
    s = time.perf_counter(); eng.search_vectors(row[None, :], 10); lat.append(time.perf_counter() - s)
after = rss()
eng.close()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_query_s": t3 - t2,
                  "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
                  "rss_after_open": before, "rss_after_queries": after}))
"""


def serving_probe(store: Path, queries: np.ndarray, model: str = MODEL_FOR_512) -> dict:
    """Open the store in a fresh process and serve queries: open time and resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        qpath = Path(tmp) / "q.npy"
        np.save(qpath, queries)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMG_AGENT_")}
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(store), model, str(qpath)],
            capture_output=True, text=True, env=env, timeout=1800,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in data.items()}


# --------------------------------------------------------------------------------------------
# the benchmark


def run(options: Any) -> Path:
    """``bench engine``: the scenario at every size; writes engine.json / engine.md / plots, returns engine.md."""
    from img_agent.bench import report

    t0 = time.time()
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    sizes = options.n or ([4_000] if options.quick else [100_000, 1_000_000])
    nq = options.queries or (30 if options.quick else 1000)
    kind = (options.kind or ["clip"])[0]
    quick = dict(index_string="IVF32,SQ8", lat_queries=20, budget_s=0.3, buffer_steps=(200, 500),
                 merge_batch=500) if options.quick else {}
    result = report.new_result("engine", command=command_line(options), quick=options.quick,
                               config={"sizes": sizes, "nq": nq, "kind": kind, **quick})
    result["runs"] = []
    md = out / "engine.md"
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"img-agent-engine-{n}-", dir=getattr(options, "store_root", None)))
        bar = ProgressBar(9, f"engine N={n:,}", not options.no_progress)
        try:
            opts = {"index_string": getattr(options, "index_string", "auto"), **quick}
            run_ = run_one(n, nq=nq, seed=options.seed, kind=kind, dim=options.dim, store=root / "store",
                           progress=bar, **opts)
        finally:
            bar.close()
            shutil.rmtree(root, ignore_errors=True)
        result["runs"].append(run_)
        report.finish_result(result, t0)
        write_json(out / "engine.json", result)
        result["plots"] = report.engine_plots(result, out)
        md.write_text(report.engine_markdown(result))
    return md
