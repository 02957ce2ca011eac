"""The vector stores side by side: the faiss engine and Milvus Lite, through the same engine API.

The scenario, on seeded CLIP-like vectors (no model is loaded), for each store in one process:

1. **insert**: N vectors through ``Engine.add_vectors`` in batches (durable as always), then ``maintain``
   and ``merge`` (faiss trains its index; Milvus flushes, and builds its index by size); vectors/s;
2. **search**: top-10 latency (``search_ids``, one query thread) round-robin over the stores, unfiltered and
   with a folder filter allowing 10 % of the images, R@10 against exact search over the allowed images;
3. **delete visibility**: 1,000 ids removed, timed, and how many of them the very next searches return
   (0 is the contract).

Milvus Lite runs inside this process on one machine; it is not a Milvus cluster, whose latency adds a
network round trip and whose throughput scales with its query nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.scratch import run_in_scratch
from img_agent.bench.engine_bench import MODEL_FOR_512, LiveMirror
from img_agent.bench.synthetic import synthetic

FOLDERS = 10


def _recall(found: list[np.ndarray], truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def stores(work: Path) -> dict[str, dict[str, Any]]:
    """The stores compared: name -> settings overrides and the index string of their rebuild (None: automatic)."""
    return {
        "faiss (auto)": {"vector_store": "faiss", "rebuild": None},
        "Milvus Lite (auto)": {"vector_store": str(work / "auto.db"), "rebuild": None},
        "Milvus Lite IVF_FLAT": {"vector_store": str(work / "ivf.db"), "rebuild": "IVF_FLAT"},
    }


def run_backends(n: int, *, nq: int, seed: int, work: Path, batch: int = 5_000) -> dict[str, Any]:
    """The scenario at size ``n`` with stores under ``work``; a JSON-able dict."""
    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.results import SearchFilter

    x = synthetic(n, 512, seed=seed)
    xq = synthetic(nq, 512, seed=seed, query="text", n_db=n)
    paths = [f"/bench/f{i % FOLDERS}/{i:08d}.jpg" for i in range(n)]
    mirror = LiveMirror(x)
    mirror.live[:] = True
    truth = mirror.exact(xq, 10, "text").gt_ids
    mirror.live[:] = [i % FOLDERS == 3 for i in range(n)]
    truth_filtered = mirror.exact(xq, 10, "text").gt_ids
    folder = SearchFilter(folder="/bench/f3")
    engines: dict[str, Any] = {}
    out: dict[str, Any] = {"n": n, "queries": nq, "stores": {}}
    try:
        for name, spec in stores(work).items():
            engine = Engine.open(Settings(data_dir=work / name.replace(" ", "_"), model=MODEL_FOR_512,
                                          vector_store=spec["vector_store"]))
            engines[name] = engine
            t0 = time.perf_counter()
            for s in range(0, n, batch):
                engine.add_vectors(x[s : s + batch], paths[s : s + batch])
            added = time.perf_counter() - t0
            engine.wait_for_background()
            engine.maintain()
            engine.merge()
            if spec["rebuild"]:
                engine.rebuild(index_string=spec["rebuild"])
            engine.wait_for_background()
            out["stores"][name] = {"insert_s": round(added, 2), "insert_vectors_per_s": round(n / added),
                                   "ready_s": round(time.perf_counter() - t0, 2), "index": engine.status().index}
        for label, flt, gt in (("search", None, truth), ("filtered search", folder, truth_filtered)):
            times: dict[str, list[float]] = {name: [] for name in engines}
            found: dict[str, list[np.ndarray]] = {name: [] for name in engines}
            for i in range(nq):  # round-robin: each query goes to every store before the next query
                for name, engine in engines.items():
                    t = time.perf_counter()
                    ids = engine.search_ids(xq[i : i + 1], 10, flt)[0][0]
                    times[name].append(time.perf_counter() - t)
                    found[name].append(ids)
            for name in engines:
                out["stores"][name][label] = {"R@10": round(_recall(found[name], gt), 4),
                                              "p50_ms": round(1e3 * float(np.median(times[name])), 3),
                                              "p99_ms": round(1e3 * float(np.percentile(times[name], 99)), 3)}
        gone = np.random.default_rng(seed + 1).choice(n, min(1000, n // 10), replace=False)
        for name, engine in engines.items():
            t = time.perf_counter()
            engine.remove(ids=gone.tolist())
            removed_ms = 1e3 * (time.perf_counter() - t)
            back = {int(i) for ids, _ in engine.search_ids(x[gone[:100]], 10) for i in ids} & set(gone.tolist())
            out["stores"][name]["delete"] = {"ids": len(gone), "ms": round(removed_ms, 1), "returned_after": len(back)}
    finally:
        for engine in engines.values():
            engine.close()
    return out


def markdown(result: dict) -> str:
    r = result["result"]
    lines = [f"# Vector stores: faiss and Milvus Lite at {r['n']:,} vectors", "", f"Command: `{result['meta']['command']}`",
             "", "Milvus Lite runs in the benchmark's process on this machine; it is not a Milvus cluster.", "",
             "| store | index | insert vectors/s | ready s | R@10 | p50 ms | p99 ms | filtered R@10 | filtered p50 ms "
             "| delete 1k ms | deleted ids returned |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["stores"].items():
        lines.append(f"| {name} | {s['index']} | {s['insert_vectors_per_s']:,} | {s['ready_s']} | {s['search']['R@10']:.3f} "
                     f"| {s['search']['p50_ms']:.2f} | {s['search']['p99_ms']:.2f} | {s['filtered search']['R@10']:.3f} "
                     f"| {s['filtered search']['p50_ms']:.2f} | {s['delete']['ms']:.0f} | {s['delete']['returned_after']} |")
    return "\n".join(lines) + "\n"


def run(options: Any) -> Path:
    """``img-agent bench backends``: the scenario at ``--n`` (default 100k; quick: 5k) in temporary stores."""
    n = (options.n or [5_000 if options.quick else 100_000])[0]
    nq = options.queries or (50 if options.quick else 500)
    return run_in_scratch(options, "backends", n=n, nq=nq, markdown=markdown,
                          scenario=lambda work: run_backends(n, nq=nq, seed=options.seed, work=work))
