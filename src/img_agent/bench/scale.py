"""Engine at scale: a bulk build, the search path against raw faiss, merge and delete, in one process.

The scenario, on seeded CLIP-like vectors (no model is loaded):

1. **bulk build** of N vectors through ``Engine.add_vectors`` in batches (durable as always) with the
   default settings: merges as the buffer fills, the index retrained in the background whenever the
   collection outgrows it (trained on a sample, then tuned), then ``maintain``; wall time, add
   throughput and the process's peak RSS;
2. **search**: public search (``search_vectors``, with records) and its index part (``search_ids``)
   against raw faiss ``IVF{nlist},Flat`` at the smallest nprobes reaching R@10 >= 0.96 and >= 0.99
   (tuned on the other half of the queries) and exact ``Flat``, latency measured round-robin in one loop (one query thread), R@10 against exact search;
3. **merge** a 10k buffer into the index (a segment; the main index is not copied);
4. **delete** 1k, then 30 % of the collection, timed; removed ids never come back.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.scratch import run_in_scratch
from img_agent.bench.engine_bench import MODEL_FOR_512, LiveMirror
from img_agent.bench.synthetic import synthetic
from img_agent.index.faiss_plan import nlist_for

MERGE_BATCH = 10_000
NPROBE_LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def _recall(found: list[np.ndarray], truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_scale(n: int, *, nq: int = 500, seed: int = 0, store: Path, batch: int = 10_000) -> dict[str, Any]:
    """The whole scenario at size ``n`` in a fresh ``store`` folder; a JSON-able dict."""
    import faiss

    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    x = synthetic(n + MERGE_BATCH, 512, seed=seed)
    xq = synthetic(nq, 512, seed=seed, query="text", n_db=n)
    paths = [f"/bench/{i:08d}.jpg" for i in range(n + MERGE_BATCH)]
    out: dict[str, Any] = {"n": n, "queries": nq}
    rss_before = _peak_rss()  # the benchmark's own vectors are in this process too: the engine's share is the rest
    engine = Engine.open(Settings(data_dir=store, model=MODEL_FOR_512))  # default merge threshold and auto-retrain
    try:
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            engine.add_vectors(x[s : min(n, s + batch)], paths[s : min(n, s + batch)])
        added = time.perf_counter() - t0
        engine.wait_for_background()
        reports = engine.maintain()  # retrain if the collection outgrew the index meanwhile
        if engine.status().buffer:
            reports.append(engine.merge())
        engine.wait_for_background()
        st = engine.status()
        out["build"] = {"add_s": round(added, 1), "add_vectors_per_s": round(n / added),
                        "final_jobs": [f"{r.operation} {r.seconds:.1f} s" for r in reports],
                        "total_s": round(time.perf_counter() - t0, 1), "peak_rss_bytes": _peak_rss(),
                        "rss_before_bytes": rss_before, "bench_data_bytes": int(x.nbytes + xq.nbytes),
                        "index": st.index}
        out["tuning"] = st.tuning
        mirror = LiveMirror(x[:n])
        mirror.live[:] = True
        truth = mirror.exact(xq, 10, "text").gt_ids
        # raw faiss IVF-Flat with the same nlist, nprobe tuned to R@10 >= 0.96 on the first half of the queries
        nlist = st.nlist or nlist_for(n)
        flat_ivf = faiss.index_factory(512, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = x[np.random.default_rng(seed).choice(n, min(n, 40 * nlist), replace=False)]
        flat_ivf.train(sample)
        flat_ivf.add(x[:n])
        half = nq // 2
        floors: dict[float, int] = {}  # recall floor -> smallest nprobe reaching it on the first half of the queries
        for p in NPROBE_LADDER:
            _, ids = flat_ivf.search(xq[:half], 10, params=faiss.SearchParametersIVF(nprobe=p))
            r = _recall(list(ids), truth[:half])
            for floor in (0.96, 0.99):
                if r >= floor and floor not in floors:
                    floors[floor] = p
            if len(floors) == 2:
                break
        exact = faiss.IndexFlatIP(512)
        exact.add(x[:n])
        systems = {
            "img-agent public search": lambda q: [h.id for h in engine.search_vectors(q, 10)[0]],
            "img-agent index part": lambda q: engine.search_ids(q, 10)[0][0].tolist(),
        }
        for floor, p in sorted(floors.items()):
            params = faiss.SearchParametersIVF(nprobe=p)
            systems[f"faiss IVF{nlist},Flat nprobe {p} (R@10 >= {floor} when tuned)"] = (
                lambda q, params=params: flat_ivf.search(q, 10, params=params)[1][0].tolist())
        systems["faiss exact Flat"] = lambda q: exact.search(q, 10)[1][0].tolist()
        faiss.omp_set_num_threads(1)
        times: dict[str, list[float]] = {name: [] for name in systems}
        found: dict[str, list[np.ndarray]] = {name: [] for name in systems}
        for i in range(half, nq):  # round-robin: each query goes to every system before the next query
            for name, fn in systems.items():
                t = time.perf_counter()
                ids = fn(xq[i : i + 1])
                times[name].append(time.perf_counter() - t)
                found[name].append(np.asarray(ids))
        flat_p50 = float(np.median(times["faiss exact Flat"]))
        out["search"] = [{"system": name, "R@10": round(_recall(found[name], truth[half:]), 4),
                          "p50_ms": round(1e3 * float(np.median(times[name])), 3),
                          "p99_ms": round(1e3 * float(np.percentile(times[name], 99)), 3),
                          "p50_over_flat": round(float(np.median(times[name])) / flat_p50, 4)} for name in systems]
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        del flat_ivf, exact
        engine.settings.merge_threshold = 10**12  # this add stays in the buffer: the merge is timed alone
        engine.add_vectors(x[n:], paths[n:])
        merge = engine.merge()
        out["merge_10k_s"] = merge.seconds
        rng = np.random.default_rng(seed + 1)
        ids = rng.choice(n, 1000, replace=False)
        t = time.perf_counter()
        engine.remove(ids=ids.tolist())
        out["delete_1k_ms"] = round(1e3 * (time.perf_counter() - t), 1)
        rest = np.setdiff1d(np.arange(n), ids)
        gone = np.concatenate([ids, rng.choice(rest, int(0.3 * n) - len(ids), replace=False)])
        t = time.perf_counter()
        engine.remove(ids=gone[len(ids):].tolist())
        out["delete_30pct_s"] = round(time.perf_counter() - t, 3)
        back = {h for hits in engine.search_ids(xq[:100], 10) for h in hits[0].tolist()} & set(gone.tolist())
        out["removed_returned"] = len(back)
    finally:
        engine.close()
    return out


def markdown(result: dict) -> str:
    r = result["result"]
    b = r["build"]
    lines = [f"# Engine at scale: {r['n']:,} vectors", "", f"Command: `{result['meta']['command']}`", "",
             f"- bulk build: add calls {b['add_s']} s ({b['add_vectors_per_s']:,} vectors/s), then "
             f"{', '.join(b['final_jobs']) or 'nothing left to do'} ({b['index']}), total {b['total_s']} s, peak RSS {b['peak_rss_bytes'] / 2**30:.2f} GiB, of which "
             f"{b['rss_before_bytes'] / 2**30:.2f} GiB before the engine opened (the benchmark's own vectors)",
             f"- tuned search setting: {r['tuning']}",
             f"- merge of a 10k buffer: {r['merge_10k_s']} s; delete 1k: {r['delete_1k_ms']} ms; delete 30 %: "
             f"{r['delete_30pct_s']} s; removed ids returned afterwards: {r['removed_returned']}", "",
             "| system | R@10 | p50 ms | p99 ms | p50 / exact Flat |", "|---|---|---|---|---|"]
    lines += [f"| {s['system']} | {s['R@10']:.3f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | 1/{1 / s['p50_over_flat']:.0f} |"
              for s in r["search"]]
    return "\n".join(lines) + "\n"


def run(options: Any) -> Path:
    """``img-agent bench scale``: the scenario at ``--n`` (default 1M; quick: 20k) in a temporary store."""
    n = (options.n or [20_000 if options.quick else 1_000_000])[0]
    nq = options.queries or (100 if options.quick else 500)
    return run_in_scratch(options, "scale", n=n, nq=nq, markdown=markdown,
                          scenario=lambda work: run_scale(n, nq=nq, seed=options.seed, store=work / "store"))
