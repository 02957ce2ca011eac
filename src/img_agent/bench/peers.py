"""``bench peers``: the same vectors and queries through img-agent and peer vector libraries, side by side.

At each size N, on seeded CLIP-like vectors (:mod:`img_agent.bench.synthetic`):

1. every system is **built** on the same N unit vectors (ids = row numbers): build time, the
   resident-memory growth of this process while building (RSS delta) and the bytes the index
   takes on disk (its own store folder, or its serialised index);
2. approximate indexes are **tuned**: the smallest setting of a short ladder whose R@10 meets a
   floor (IVF nprobe: 0.96; HNSW ef / usearch expansion_search / LanceDB refine_factor: 0.95)
   on a tuning query set drawn apart from the measured queries;
3. **R@10** (tie-aware set recall, :mod:`img_agent.bench.metrics`) of the measured queries
   against exact search over the live vectors; **p50/p99 latency** of single queries, k=10,
   measured round-robin in one loop (query i goes to every system, in a rotating order, before
   query i+1), one search thread each (faiss OpenMP 1 thread, hnswlib ``num_threads=1``,
   usearch ``threads=1``; img-agent searches one query on one thread by itself);
4. a seeded 30 % of the vectors is **deleted** in every system with its own delete call: delete
   time, R@10 against exact search over the remaining vectors (a deleted id returned counts as a
   miss, and is counted apart) and the latency loop again.
"""

from __future__ import annotations

import gc
import importlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench import peers_systems as ps
from img_agent.bench.common import (
    Progress,
    ProgressBar,
    command_line,
    no_progress,
    write_result,
)
from img_agent.bench.engine_bench import LiveMirror
from img_agent.bench.metrics import Timer, percentile, recall_table, rss_bytes
from img_agent.bench.synthetic import synthetic
from img_agent.errors import ConfigError

log = logging.getLogger(__name__)

K = 10
DELETE_SHARE = 0.3
DIM = 512  # the engine store uses a 512-d model name


def recall10(ids: np.ndarray, x: np.ndarray, qs) -> float:
    return float(recall_table(ids, x, qs, ks=(K,), rs=())[f"R@{K}"])


def tune(v: ps.Variant, xq: np.ndarray, qs, x: np.ndarray) -> dict | None:
    """Walk the variant's ladder on the tuning queries; keep the first value meeting its floor (else the last)."""
    if v.knob is None or v.set_knob is None or not v.ladder:
        return None
    steps = []
    for value in v.ladder:
        v.set_knob(value)
        r = recall10(v.search(xq, K, False), x, qs)
        steps.append([value, round(r, 4)])
        if v.floor is not None and r >= v.floor:
            break
    return {"knob": v.knob, "value": steps[-1][0], "floor": v.floor, "met": steps[-1][1] >= (v.floor or 0),
            "ladder": steps}


def round_robin(variants: list[ps.Variant], xq: np.ndarray, *, warmup: int = 3) -> dict[str, dict]:
    """Single-query latency, k=10, of every variant: query i goes to all of them before query i+1."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for v in variants:
            for i in range(min(warmup, len(xq))):
                v.search(xq[i : i + 1], K, True)
        times: dict[str, list[float]] = {v.label: [] for v in variants}
        found = {v.label: np.full((len(xq), K), -1, dtype=np.int64) for v in variants}
        for i in range(len(xq)):
            q = xq[i : i + 1]
            for j in range(len(variants)):
                v = variants[(i + j) % len(variants)]
                t0 = time.perf_counter()
                ids = v.search(q, K, True)
                times[v.label].append(time.perf_counter() - t0)
                found[v.label][i] = ids[0]
    finally:
        faiss.omp_set_num_threads(threads)
    return {label: {"p50_ms": round(percentile(np.asarray(t) * 1e3, 50), 4),
                    "p99_ms": round(percentile(np.asarray(t) * 1e3, 99), 4), "ids": found[label]}
            for label, t in times.items()}


def _build(cls: type[ps.System], x: np.ndarray, folder: Path) -> tuple[ps.System | None, dict]:
    info: dict[str, Any] = {"system": cls.name, "key": cls.key, "delete_method": cls.delete_method}
    if cls.module and not ps.installed(cls.module):
        info["status"] = "not installed"
        return None, info
    system = cls()
    try:
        for module in cls.imports:
            importlib.import_module(module)
        gc.collect()
        rss0 = rss_bytes()
        with Timer() as t:
            system.build(x, folder)
        info["params"] = system.params()
    except Exception as exc:  # a failing peer is reported and the others still run
        log.exception("building %s failed", cls.name)
        info["status"] = f"failed: {type(exc).__name__}: {exc}"
        return None, info
    gc.collect()
    info.update(status="ok", build_s=round(t.s, 3), rss_delta_bytes=rss_bytes() - rss0,
                disk_bytes=system.disk_bytes())
    return system, info


def run_one(n: int, *, nq: int, n_tune: int, lat_queries: int, seed: int, query_kind: str, systems: list[str],
            workdir: Path, progress: Progress = no_progress) -> dict:
    """Build, tune, measure, delete 30 %, measure again at one size; returns a JSON-able dict."""
    x = synthetic(n, DIM, kind="clip", seed=seed)
    queries = synthetic(n_tune + nq, DIM, kind="clip", seed=seed, query=query_kind, n_db=n)  # type: ignore[arg-type]
    xt, xq = queries[:n_tune], queries[n_tune:]
    mirror = LiveMirror(x)
    mirror.live[:] = True
    gt_tune, gt = mirror.exact(xt, K, "tune"), mirror.exact(xq, K, query_kind)
    progress(1, "data")
    built: list[tuple[ps.System, dict]] = []
    rows: list[dict] = []
    out: dict = {"n": n, "dim": DIM, "nq": nq, "n_tune": n_tune, "lat_queries": lat_queries,
                 "query_kind": query_kind, "delete_share": DELETE_SHARE, "rows": rows}
    try:
        for cls in ps.SYSTEMS:
            if cls.key not in systems:
                continue
            progress(0, f"build {cls.name}")
            system, info = _build(cls, x, workdir)
            if system is None:
                rows.append(dict(info, label=cls.name))
                continue
            built.append((system, info))
            for v in system.variants():
                row = dict(info, label=v.label)
                row["tuning"] = tune(v, xt, gt_tune, x)
                row["R@10"] = round(recall10(v.search(xq, K, False), x, gt), 4)
                rows.append(row)
                row["_variant"] = v
            progress(1, f"built {cls.name}")
        measured = [r for r in rows if "_variant" in r]
        variants = [r["_variant"] for r in measured]
        lat = round_robin(variants, xq[:lat_queries])
        for r in measured:
            r.update({k: v for k, v in lat[r["label"]].items() if k != "ids"})
        progress(1, "latency")
        rng = np.random.default_rng([seed, 30])
        victims = np.sort(rng.choice(n, size=int(DELETE_SHARE * n), replace=False))
        for system, info in built:
            with Timer() as t:
                system.delete(victims)
            info["delete_s"] = round(t.s, 3)
        mirror.live[victims] = False
        gt_after = mirror.exact(xq, K, query_kind)
        deleted = np.zeros(n, dtype=bool)
        deleted[victims] = True
        lat_after = round_robin(variants, xq[:lat_queries])
        for r in measured:
            v = r.pop("_variant")
            ids = v.search(xq, K, False)
            returned = np.concatenate([ids.ravel(), lat_after[v.label]["ids"].ravel()])
            r["deleted_returned"] = int(deleted[returned[returned >= 0]].sum())
            r["R@10_after_delete"] = round(recall10(np.where((ids >= 0) & deleted[np.maximum(ids, 0)], -1, ids),
                                                    x, gt_after), 4)
            r["p50_after_delete_ms"] = lat_after[v.label]["p50_ms"]
            r["p99_after_delete_ms"] = lat_after[v.label]["p99_ms"]
            r["delete_s"] = next(i["delete_s"] for _, i in built if i["key"] == r["key"])
        out["deleted"] = len(victims)
        progress(1, "deletes")
    finally:
        for system, _ in built:
            system.close()
    return out


def markdown(result: dict) -> str:
    from img_agent.bench.report import fmt, mb, md_table, meta_markdown

    lines = ["# Peers: img-agent and other vector libraries on the same data", "", meta_markdown(result["meta"]), "",
             ("Same seeded CLIP-like 512-d unit vectors and queries for every system. R@10: tie-aware set recall "
             "against exact search over the live vectors. Latency: single queries, k=10, one search thread, "
             "measured round-robin in one loop. Tuned knobs: smallest ladder value meeting the floor on a separate "
             "tuning query set. After deletes: a seeded 30 % of the vectors removed with each system's own delete "
             "call; a deleted id returned counts as a miss."), ""]
    for run in result.get("runs", []):
        lines += [(f"## N = {run['n']:,} ({run['query_kind']} queries: {run['nq']} measured, {run['lat_queries']} "
                   f"timed, {run['n_tune']} for tuning; {run.get('deleted', 0):,} deleted)"), ""]
        table = []
        for r in run["rows"]:
            if r.get("status") != "ok":
                table.append([r["label"], r.get("status", "?")] + ["–"] * 10)
                continue
            table.append([r["label"], setting(r), r["R@10"], r["p50_ms"], r["p99_ms"], r["build_s"],
                          mb(r["disk_bytes"]), mb(r["rss_delta_bytes"]), r["R@10_after_delete"],
                          r["p50_after_delete_ms"], r["delete_s"], r["deleted_returned"]])
        lines += [md_table(["system", "setting", "R@10", "p50 ms", "p99 ms", "build s", "disk MB", "RSS Δ MB",
                            "R@10 after delete", "p50 after ms", "delete s", "deleted ids returned"], table), ""]
        tuned = [r for r in run["rows"] if r.get("tuning")]
        if tuned:
            lines += ["Tuning ladders (value → R@10 on the tuning queries):", ""]
            for r in tuned:
                t = r["tuning"]
                steps = ", ".join(f"{v} → {fmt(float(rec))}" for v, rec in t["ladder"])
                lines.append(f"- {r['label']}: {t['knob']} {steps}" + ("" if t["met"] else " (**floor not met**)"))
            lines.append("")
        lines += ["Delete methods: " + "; ".join(sorted({f"{r['system']}: {r['delete_method']}" for r in run["rows"]
                                                      if r.get("status") == "ok"})), ""]
    if result.get("plots"):
        lines += [f"![recall vs latency]({Path(p).name})" for p in result["plots"]] + [""]
    return "\n".join(lines)


def setting(r: dict) -> str:
    """The setting cell of a row: the tuned knob, or the system's own parameters."""
    p = dict(r.get("params") or {})
    t = r.get("tuning")
    parts = [f"{t['knob']}={t['value']}"] if t else []
    if r["key"] == "img-agent":
        parts.append(str(p.get("index")) + (f" nprobe={p['nprobe']}" if p.get("nprobe") else ""))
    else:
        parts += [f"{k}={v}" for k, v in p.items() if k not in ("compression",)]
    return ", ".join(str(x) for x in parts) or "exact"


def plots(result: dict, out: Path) -> list[str]:
    runs = [r for r in result.get("runs", []) if any(x.get("status") == "ok" for x in r["rows"])]
    if not runs:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from img_agent.bench.report import save_figure

    fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 5), squeeze=False)
    for ax, run in zip(axes[0], runs):
        for i, r in enumerate(x for x in run["rows"] if x.get("status") == "ok"):
            color = f"C{i % 10}"
            ax.scatter([r["p50_ms"]], [r["R@10"]], color=color, label=r["label"])
            ax.scatter([r["p50_after_delete_ms"]], [r["R@10_after_delete"]], color=color, marker="x")
        ax.set_xscale("log")
        ax.set_xlabel("p50 single-query latency, k=10, one thread (ms, log)")
        ax.set_ylabel("R@10")
        ax.set_title(f"N={run['n']:,}: dots before, crosses after 30 % deletes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [save_figure(fig, out / "peers_recall_latency.png")]


def library_versions() -> dict[str, Any]:
    """Versions of the libraries compared (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for dist in ("faiss-cpu", "hnswlib", "usearch", "lancedb"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def run(options: Any) -> Path:
    """``bench peers``: every size in turn; writes peers.json / peers.md / peers_recall_latency.png."""
    from img_agent.bench import report

    t0 = time.time()
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    systems = list(getattr(options, "systems", None) or ps.SYSTEM_KEYS)
    unknown = [s for s in systems if s not in ps.SYSTEM_KEYS]
    if unknown:
        raise ConfigError(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(ps.SYSTEM_KEYS)}.")
    sizes = options.n or ([2_000] if options.quick else [100_000, 1_000_000])
    nq = options.queries or (30 if options.quick else 1000)
    n_tune = 20 if options.quick else 200
    lat_queries = min(nq, 10 if options.quick else 500)
    query_kind = getattr(options, "query_kind", None) or "image"
    result = report.new_result("peers", command=command_line(options), quick=options.quick,
                               config={"sizes": sizes, "nq": nq, "n_tune": n_tune, "lat_queries": lat_queries,
                                       "query_kind": query_kind, "systems": systems})
    result["meta"]["peers"] = library_versions()
    result["runs"] = []
    for n in sizes:
        bar = ProgressBar(3 + len(systems), f"peers N={n:,}", not options.no_progress)
        try:
            with tempfile.TemporaryDirectory(prefix=f"img-agent-peers-{n}-") as tmp:
                result["runs"].append(run_one(n, nq=nq, n_tune=n_tune, lat_queries=lat_queries, seed=options.seed,
                                              query_kind=query_kind, systems=systems, workdir=Path(tmp),
                                              progress=bar))
        finally:
            bar.close()
        report.finish_result(result, t0)
        result["plots"] = plots(result, out)
        md = write_result(out, "peers", result, markdown(result))
    return md
