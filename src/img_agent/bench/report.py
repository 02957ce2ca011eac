"""Writing benchmark results: JSON (everything), markdown tables (for people), PNG plots (matplotlib, Agg).

Every result is a plain dict ``{"benchmark": name, "meta": {...}, ...}``; the markdown and plots are
derived from the JSON alone, so ``img-agent bench report DIR`` can re-render them. Files are
written by :mod:`img_agent.bench.common`.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

# --------------------------------------------------------------------------------------------
# machine and run metadata


def machine_info() -> dict:
    """Where the numbers came from: CPU, cores, memory, library versions, load."""
    info: dict = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "loadavg_start": _loadavg(),
        "nice": _nice(),
    }
    # versions from the installed distributions' metadata: importing torch and open_clip costs seconds
    for key, dists in (("numpy", ("numpy",)), ("faiss", ("faiss-cpu", "faiss-gpu", "faiss")), ("torch", ("torch",)),
                       ("open_clip", ("open_clip_torch",))):
        m = sys.modules.get(key)
        if m is not None and getattr(m, "__version__", None):
            info[key] = m.__version__
            continue
        for dist in dists:
            try:
                info[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _nice() -> int | None:
    try:
        return os.nice(0)
    except OSError:
        return None


def new_result(benchmark: str, *, command: str, quick: bool, config: dict | None = None) -> dict:
    return {
        "benchmark": benchmark,
        "meta": {
            "command": command,
            "quick": quick,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": machine_info(),
            "config": config or {},
        },
    }


def finish_result(result: dict, t0: float) -> dict:
    result["meta"]["elapsed_s"] = round(time.time() - t0, 1)
    result["meta"]["loadavg_end"] = _loadavg()
    return result


# --------------------------------------------------------------------------------------------
# formatting


def fmt(x, digits: int = 3) -> str:
    """Compact cell text: None/nan -> '–', floats to ``digits`` significant-ish places."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        if abs(x) >= 1:
            return f"{x:.2f}"
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def mb(nbytes: int | float | None) -> str:
    if nbytes is None:
        return "–"
    return f"{nbytes / 1e6:,.1f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(lines)


def meta_markdown(meta: dict) -> str:
    m = meta.get("machine", {})
    parts = [
        f"- command: `{meta.get('command', '?')}`",
        f"- machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB; "
        f"{m.get('platform', '')}",
        f"- versions: python {m.get('python', '?')}, numpy {m.get('numpy', '?')}, faiss {m.get('faiss', '?')}, "
        f"torch {m.get('torch', '–')}, open_clip {m.get('open_clip', '–')}",
        f"- started {meta.get('started', '?')}, took {meta.get('elapsed_s', '?')} s; load average at start "
        f"{m.get('loadavg_start')}, at end {meta.get('loadavg_end')}; nice {m.get('nice')}",
    ]
    if meta.get("quick"):
        parts.append("- **quick mode**: tiny sizes, for smoke tests only; do not quote these numbers")
    return "\n".join(parts)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------
# ANN sweep


ANN_COLUMNS = (
    "index / settings", "R@1", "R@10", "R@100", "1-R@1", "1-R@10", "1-R@100",
    "p50 ms", "p99 ms", "× flat", "QPS", "index MB", "train s", "add s",
)


def _ann_cells(r: dict) -> list:
    return [
        r["label"], r.get("R@1"), r.get("R@10"), r.get("R@100"), r.get("1-R@1"), r.get("1-R@10"),
        r.get("1-R@100"), r["p50_ms"], r["p99_ms"], r.get("speedup_p50"), r.get("qps"),
        mb(r["index_bytes"]), r.get("train_s"), r.get("add_s"),
    ]


def ann_selected(rows: list[dict]) -> list[dict]:
    """A readable subset: baselines, the rule's row, and per index the fastest setting reaching
    R@10 ≥ 0.9 / 0.95 / 0.99 (or its best recall when it never gets there)."""
    chosen: list[dict] = []
    seen: set[str] = set()

    def add(r: dict | None) -> None:
        if r is not None and r["label"] not in seen:
            seen.add(r["label"])
            chosen.append(r)

    by_series: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        by_series.setdefault((r["index"], r.get("rerank", 0)), []).append(r)
    for (_, _), series in by_series.items():
        for floor in (0.9, 0.95, 0.99):
            ok = [r for r in series if (r.get("R@10") or 0) >= floor]
            if ok:
                add(min(ok, key=lambda r: r["p50_ms"]))
        if not any((r.get("R@10") or 0) >= 0.9 for r in series):
            add(max(series, key=lambda r: (r.get("R@10") or 0, -r["p50_ms"])))
    return chosen


def ann_markdown(result: dict, *, full_tables: bool = True) -> str:
    out = ["# ANN sweep (raw faiss)", "", meta_markdown(result["meta"]), ""]
    out.append(
        "Recall: **R@k** = tie-aware set recall |approx top-k ∩ exact top-k| / k (what a user sees); "
        "**1-R@R** = faiss's 1-recall@R, the share of queries whose true nearest neighbour is anywhere in "
        "the top R (what a \"Recall@100\" target usually means). Latency: one query at a time, one faiss thread, k=10 "
        "(re-ranked rows: C candidates re-scored from the float vectors, included in the time). QPS: batch, "
        "all threads, k=10. `× flat` = flat p50 / this p50, same run and queries. index MB = serialized "
        "index (re-ranked rows also need the float vectors, N×dim×4 bytes, which the engine keeps on disk). "
        "train s includes the IVF k-means (shared by the codecs of one nlist, counted for each)."
    )
    for run in result.get("runs", []):
        ds = run["dataset"]
        out += ["", f"## {ds['name']} — N = {ds['n']:,}, dim {ds['dim']}", ""]
        out.append(f"Data: {ds.get('source', '')}; mean pairwise cosine {ds.get('mean_cos')}.")
        mn = run["summary"].get("min_nprobe_R10_0.95") or []
        if mn:
            qnames = [q["name"] for q in run["query_sets"]]
            out += ["", "Smallest nprobe reaching R@10 ≥ 0.95 on every query set (p50 ms at that nprobe; "
                    "'–' = never reached in the grid, best R@10 shown):", ""]
            table = []
            for e in mn:
                cells = [e["index"] + (f" rerank={e['rerank']}" if e["rerank"] else ""), mb(e["index_bytes"]),
                         e.get("nprobe_all")]
                for q in qnames:
                    p50 = (e.get("p50_ms_at_nprobe_all") or {}).get(q)
                    rec = (e.get("recall_at_nprobe_all") or {}).get(q)
                    cells.append(f"{fmt(p50)} ms, R@10 {fmt(rec)}" if p50 is not None else
                                 f"best R@10 {fmt((e.get(q) or {}).get('best', (e.get(q) or {}).get('R@10')))}")
                table.append(cells)
            out.append(md_table(["index", "index MB", "nprobe", *[f"{q} queries" for q in qnames]], table))
        for qs in run["query_sets"]:
            name = qs["name"]
            rows = [r for r in run["rows"] if r["queries"] == name]
            out += ["", f"### {ds['name']} / {name} queries ({qs.get('nq')})", ""]
            out.append(
                f"Queries: {qs.get('source')}; similarity to 1st neighbour {qs.get('q_top1')}, to 10th "
                f"{qs.get('q_top10')}; LID {qs.get('lid')}; relative contrast {qs.get('rc')}."
            )
            rc = next((c for c in run["summary"].get("rule_check", []) if c.get("queries") == name), {})
            if rc.get("measured"):
                out += ["", f"**Planned engine rule at this N: {rc['rule']}**", ""]
                out.append(
                    md_table(
                        ["R@10", "R@100 (same C)", "R@100 (C=1000)", "p50 ms", "p99 ms", "× flat", "index MB",
                         "MB scaled to 1M", "R@10 ≥ 0.95", "≥ 50× flat (target at 1M)", "≤ 0.6 GB at 1M"],
                        [[rc.get("R@10"), rc.get("R@100_same_config"), rc.get("R@100_rerank1000"), rc["p50_ms"],
                          rc["p99_ms"], rc.get("speedup_p50"), mb(rc["index_bytes"]),
                          mb(rc["index_bytes_scaled_to_1m"]), rc["meets_recall"], rc["meets_speedup"],
                          rc["meets_memory"]]],
                    )
                )
            out += ["", "Selected rows (per index: the fastest setting reaching R@10 0.90 / 0.95 / 0.99, "
                    "or its best):", ""]
            out.append(md_table(ANN_COLUMNS, (_ann_cells(r) for r in ann_selected(rows))))
            if full_tables:
                out += ["", "<details><summary>All rows</summary>", ""]
                out.append(md_table(ANN_COLUMNS, (_ann_cells(r) for r in rows)))
                out += ["", "</details>"]
            for p in qs.get("plots", []):
                out += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(out) + "\n"


_PANELS = (
    ("exact & uncompressed", lambda r: r["family"] in ("Flat", "HNSW") or r["index"].endswith(",Flat")),
    ("IVF-SQ8", lambda r: r["index"].endswith(",SQ8")),
    ("IVF-PQ", lambda r: r["family"] == "IVF" and ",PQ" in r["index"]),
    ("exhaustive PQ & LSH", lambda r: r["family"] in ("PQ", "LSH")),
)


def ann_plots(run: dict, queries: str, out_dir: Path, stem: str) -> list[str]:
    """Recall–latency trade-off plots (R@10 and R@100 vs single-query p50), one panel per family group."""
    plt = _plt()
    rows = [r for r in run["rows"] if r["queries"] == queries]
    flat = next((r for r in rows if r["family"] == "Flat"), None)
    paths = []
    for key in ("R@10", "R@100"):
        fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharey=True)
        for ax, (title, pred) in zip(axes.ravel(), _PANELS):
            series: dict[str, list[dict]] = {}
            for r in rows:
                if pred(r) and key in r:
                    name = r["index"] + (f" rerank={r['rerank']}" if r.get("rerank") else "")
                    series.setdefault(name, []).append(r)
            for name, pts in series.items():
                pts = sorted(pts, key=lambda r: r["p50_ms"])
                ax.plot([r["p50_ms"] for r in pts], [r[key] for r in pts], marker="o", ms=3, lw=1, label=name)
            if flat is not None:
                ax.axvline(flat["p50_ms"], color="k", ls=":", lw=1)
                ax.axvline(flat["p50_ms"] / 50, color="r", ls=":", lw=1)
            ax.axhline(0.95, color="grey", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(title)
            ax.set_xlabel("single-query p50 latency (ms, log)")
            ax.set_ylabel(f"{key} (set recall, tie-aware)")
            ax.grid(True, which="both", alpha=0.3)
            if series:
                ax.legend(fontsize=6, loc="lower right", ncol=1 if len(series) < 10 else 2)
        ds = run["dataset"]
        fig.suptitle(
            f"{key} vs latency — {ds['name']} / {queries} queries, N={ds['n']:,} "
            "(black: flat p50, red: flat p50 / 50, dashed: 0.95)"
        )
        paths.append(save_figure(fig, out_dir / f"{stem}_{key.replace('@', '')}.png"))
    return paths


# --------------------------------------------------------------------------------------------
# engine benchmark


def _gb(nbytes) -> str:
    return "–" if nbytes is None else f"{nbytes / 1e9:.2f}"


def engine_markdown(result: dict) -> str:
    out = ["# Engine benchmark (the real Engine: add_vectors, search_vectors, merge, remove, rebuild)", "",
           meta_markdown(result["meta"]), ""]
    out.append(
        "Latency: `search_vectors` one query at a time, k=10, as the engine serves (one faiss thread, catalog "
        "lookups of the hits included); *core* = the index part alone. Recall: tie-aware set recall against "
        "exact search over the live vectors of the same engine state (batch search). Flat: faiss exact search "
        "on the same vectors, one thread."
    )
    runs = result.get("runs", [])
    if not runs:
        return "\n".join(out) + "\n"
    out += ["", "## Search", ""]
    rows = []
    for r in runs:
        moved = r.get("merge_10k", {}).get("report", {}).get("moved", 0)
        rb = (r.get("rebuild") or {}).get("status") or {}
        for stage, label in (("search_base", f"N−{moved:,} (first build)"),
                             ("search_with_10k_buffer", f"+{moved:,} in buffer"), ("search_n", "N, after merge"),
                             ("search_after_remove_1pct", "1 % removed"),
                             ("search_after_rebuild", f"after rebuild ({rb.get('live', 0):,} live, "
                                                      f"{rb.get('index')} nprobe {rb.get('nprobe')})")):
            for q, m in r.get(stage, {}).items():
                rows.append([f"{r['n']:,}", label, q, m.get("R@10"), m.get("R@100"), m.get("1-R@1"),
                             m.get("search_p50_ms"), m.get("search_p99_ms"), m.get("core_p50_ms"),
                             (r.get("flat", {}).get(q, {}) or {}).get("p50_ms") if stage == "search_n" else None,
                             m.get("speedup_vs_flat_p50"), m.get("batch_qps_k10")])
    out.append(md_table(["N", "state", "queries", "R@10", "R@100", "1-R@1", "p50 ms", "p99 ms", "core p50 ms",
                         "flat p50 ms", "× flat", "batch QPS"], rows))
    out += ["", "## Index, maintenance, memory, disk", ""]
    rows = []
    for r in runs:
        ib, m10, rb = r.get("initial_build", {}), r.get("merge_10k", {}), r.get("rebuild", {})
        probe = r.get("serving_probe", {})
        after = probe.get("rss_after_queries", {})
        disk = r.get("disk_bytes", {})
        rows.append([
            f"{r['n']:,}", (m10.get("status") or {}).get("index"), (m10.get("status") or {}).get("nprobe"),
            (m10.get("status") or {}).get("rerank_candidates"), r.get("bulk_add", {}).get("vectors_per_s"),
            r.get("bulk_add", {}).get("first_batch_per_s"), r.get("bulk_add", {}).get("last_batch_per_s"),
            ib.get("seconds"), m10.get("seconds"), rb.get("seconds"),
            _gb(r.get("main_index_bytes")), _gb(after.get("RssAnon")), _gb(after.get("RssFile")),
            probe.get("open_s"), _gb(disk.get("total")),
        ])
    out.append(md_table(["N", "index", "nprobe", "rerank C", "add vec/s", "add vec/s (1st batch)",
                         "add vec/s (last batch)", "first build s", "merge 10k s", "rebuild s", "index GB",
                         "serving RSS anon GB", "serving RSS file GB", "open s", "disk GB"], rows))
    out += ["", "Disk by file:", ""]
    for r in runs:
        d = r.get("disk_bytes", {})
        out.append(f"- N={r['n']:,}: " + ", ".join(f"{k} {_gb(v)} GB" for k, v in sorted(d.items())))
    out += ["", "## Remove visibility", ""]
    rows = []
    for r in runs:
        rm = r.get("remove", {})
        rows.append([f"{r['n']:,}", rm.get("removed"), rm.get("reappeared"), rm.get("short_results"),
                     rm.get("remove_p50_ms"), rm.get("remove_p99_ms"), (rm.get("bulk_1pct") or {}).get("ids"),
                     (rm.get("bulk_1pct") or {}).get("seconds")])
    out.append(md_table(["N", "top hits removed", "reappeared in next search", "short result lists",
                         "remove p50 ms", "remove p99 ms", "bulk remove ids", "bulk remove s"], rows))
    out += ["", "## Buffer size effect (image queries)", ""]
    rows = []
    for r in runs:
        for b in r.get("buffer_effect", []):
            rows.append([f"{r['n']:,}", b["buffer"], b["p50_ms"], b["p99_ms"], b.get("core_p50_ms")])
    out.append(md_table(["N", "vectors in buffer", "p50 ms", "p99 ms", "core p50 ms"], rows))
    for p in result.get("plots", []):
        out += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(out) + "\n"


def engine_plots(result: dict, out_dir: Path) -> list[str]:
    plt = _plt()
    runs = result.get("runs", [])
    if not runs:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        be = r.get("buffer_effect", [])
        a1.plot([b["buffer"] for b in be], [b["p50_ms"] for b in be], marker="o", label=f"N={r['n']:,} p50")
        a1.plot([b["buffer"] for b in be], [b["p99_ms"] for b in be], marker="x", ls="--", label=f"N={r['n']:,} p99")
        batches = r.get("bulk_add", {}).get("batches", [])
        a2.plot([b["buffer_before"] for b in batches], [b["vectors_per_s"] for b in batches], label=f"N={r['n']:,}")
    a1.set_xlabel("vectors waiting in the exact buffer")
    a1.set_ylabel("search latency, k=10 (ms)")
    a1.set_title("Buffer size vs single-query latency")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7)
    a2.set_xlabel("buffer size before the add_vectors call")
    a2.set_ylabel("vectors / s (batches of 10k, durable)")
    a2.set_title("add_vectors throughput as the buffer grows")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    return [save_figure(fig, out_dir / "engine_buffer.png")]


# --------------------------------------------------------------------------------------------
# ingestion


_INGEST_WAYS = (("model_only", "model only (pre-decoded tensors)"), ("engine_pipeline", "engine add_paths (pipeline)"),
                ("encode_stream", "encode_stream alone (no catalog)"), ("naive_loop", "naive one-at-a-time loop"))


def ingest_markdown(result: dict) -> str:
    r = result.get("run", {})
    out = ["# Ingestion benchmark", "", meta_markdown(result["meta"]), ""]
    out.append(
        f"{r.get('images')} generated JPEGs of {r.get('size')} (mean {r.get('mean_file_kb')} KB), model "
        f"{r.get('model')} ({r.get('weights')}, {r.get('dim')}-d), batch {r.get('batch_size')}, "
        f"{r.get('workers')} decode workers, {r.get('torch_threads')} torch threads, files in the page cache; "
        f"naive loop on the first {r.get('naive_images')} images; best of {len(next(iter(r.get('rounds', {'x': [0]}).values())))} "
        "alternating rounds per way."
    )
    out += ["", md_table(["way", "images/s", "seconds"],
                         [[label, r.get(k, {}).get("images_per_s"), r.get(k, {}).get("seconds")]
                          for k, label in _INGEST_WAYS if k in r])]
    out += ["", md_table(
        ["pipeline / model only", "target", "met", "pipeline / naive", "target", "met", "encode_stream / model only"],
        [[r.get("pipeline_vs_model"), "≥ 0.90", r.get("meets_90pct_of_model"), r.get("pipeline_vs_naive"), "≥ 5",
          r.get("meets_5x_naive"), r.get("stream_vs_model")]])]
    for p in result.get("plots", []):
        out += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(out) + "\n"


def ingest_plots(result: dict, out_dir: Path) -> list[str]:
    r = result.get("run", {})
    ways = [(label, r[k]["images_per_s"]) for k, label in _INGEST_WAYS if k in r]
    if not ways:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.barh([w[0] for w in ways][::-1], [w[1] for w in ways][::-1], color="#4c72b0")
    for i, (_, v) in enumerate(ways[::-1]):
        ax.text(v, i, f" {v:.1f}", va="center")
    ax.set_xlabel("images / s")
    ax.set_title(f"Ingestion, {r.get('model')} at {r.get('size')}, {r.get('images')} JPEGs")
    return [save_figure(fig, out_dir / "ingest.png")]


# --------------------------------------------------------------------------------------------
# end to end


def e2e_markdown(result: dict) -> str:
    out = ["# End-to-end query latency", "", meta_markdown(result["meta"]), ""]
    out.append(
        "One query at a time after a warm-up, k=20, every way interleaved query by query (load bursts on a "
        "shared machine hit all alike). The text encoder is the real architecture with random "
        "weights (latency is the real model's; results are meaningless). MCP in memory: `mcp.Client` on the "
        "server object (JSON-RPC, validation, rendering; no transport, no thumbnails). MCP stdio: a fresh server "
        "process on the same store."
    )
    rows = []
    for r in result.get("runs", []):
        st = r.get("status", {})
        mcp = r.get("mcp_search_by_text", r.get("mcp_in_memory", {}))
        rows.append([f"{r['n']:,}", st.get("index"), r.get("model"), r.get("encode_text", {}).get("p50_ms"),
                     r.get("encode_text_1thread", {}).get("p50_ms"), r.get("search_vectors", {}).get("p50_ms"),
                     r.get("search_text", {}).get("p50_ms"), r.get("search_text", {}).get("p99_ms"),
                     mcp.get("p50_ms"), mcp.get("p99_ms"), r.get("meets_50ms")])
    out += ["", md_table(["N", "index", "text model", "encode_text p50 ms", "encode_text 1 thread p50 ms",
                          "search_vectors p50 ms", "search_text p50 ms", "search_text p99 ms",
                          "MCP search_by_text p50 ms", "MCP p99 ms", "text query < 50 ms"], rows)]
    rows = []
    for r in result.get("runs", []):
        s = r.get("mcp_stdio", {})
        rows.append([f"{r['n']:,}", s.get("initialize_s"), s.get("initialize_and_list_s"), s.get("tools"),
                     s.get("first_index_status_s"), r.get("meets_1s_startup"), s.get("error", "")])
    out += ["", md_table(["N", "initialize s", "initialize + tools/list s", "tools", "first index_status s",
                          "< 1 s", "error"], rows)]
    for r in result.get("runs", []):
        if "store" in r and "add_s" in r["store"]:
            s = r["store"]
            out.append(f"\nStore N={r['n']:,}: add_vectors {s['add_s']} s, first merge (build) {s['build_s']} s, "
                       f"index {s['index']} (nprobe {s['nprobe']}, re-rank {s['rerank_candidates']}).")
    return "\n".join(out) + "\n"


def save_figure(fig: Any, path: Path) -> str:
    """Lay out ``fig``, write it as a PNG at ``path`` and release it; the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
