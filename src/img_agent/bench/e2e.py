"""End-to-end query latency: text → CLIP text encoder → engine search, and the same through MCP.

A store of N synthetic CLIP-like vectors is built through the engine (``add_vectors`` + ``merge``,
the ``auto`` index for N) with a ViT-B-32 text encoder of random weights attached (no download:
the compute is the real model's; the results are meaningless, the latency is not). Measured, one
query at a time after a warm-up:

- ``encode_text`` alone (torch's default thread count, and one thread);
- ``search_vectors`` with the encoded query (the index part plus catalog lookups);
- ``Engine.search_text`` (encode + search + catalog lookups), k=20;
- MCP ``search_by_text`` through an in-memory client session (``mcp.Client`` on the server
  object: JSON-RPC, validation, rendering, no transport), k=20, no thumbnails (the store's
  paths are synthetic);
- all of the above interleaved query by query, so a burst of load from other processes hits every
  way alike;
- MCP over stdio: a fresh ``python -m img_agent serve`` process on the same store,
  time to ``initialize`` + ``tools/list``, and to the first ``index_status`` (which waits for the
  engine to open in the server's background thread).

Targets: ``initialize`` + ``tools/list`` under 1 s; a warm text query under 50 ms at 1M.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.common import Progress, ProgressBar, command_line, no_progress, write_result
from img_agent.bench.metrics import percentile

QUERIES = (
    "a red bicycle leaning against a brick wall", "two dogs playing in the snow", "sunset over the ocean",
    "a bowl of ramen with chopsticks", "city skyline at night", "a child blowing out birthday candles",
    "mountain lake with pine trees", "a cat sleeping on a laptop keyboard", "old black and white family photo",
    "screenshot of a spreadsheet", "wedding couple dancing", "close-up of a sunflower", "a crowded train station",
    "receipt from a restaurant", "a whiteboard covered in diagrams", "snowboarder jumping", "foggy forest path",
    "a plate of sushi", "vintage car parked on a street", "hot air balloons in the sky",
)


def build_store(store: Path, n: int, encoder, *, seed: int = 0, progress: Progress = no_progress) -> dict:
    """A store of n synthetic vectors with ``encoder`` recorded as its model; the auto index built."""
    from img_agent.bench.synthetic import synthetic
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    settings = Settings(data_dir=store, model=encoder.name, merge_threshold=10**12)
    x = synthetic(n, encoder.dim, seed=seed)
    t0 = time.perf_counter()
    with Engine.open(settings, encoder=encoder) as engine:
        step = 250_000  # few large calls: each add_vectors copies the growing exact buffer once
        for s in range(0, n, step):
            e = min(n, s + step)
            engine.add_vectors(x[s:e], [f"/bench/img_{i:08d}.jpg" for i in range(s, e)])
            progress(0, f"add {e:,}/{n:,}")
        added_s = time.perf_counter() - t0
        del x
        rep = engine.merge()
        status = engine.status()
    return {"n": n, "add_s": round(added_s, 2), "build_s": round(rep.seconds, 2), "index": status.index,
            "nprobe": status.nprobe, "rerank_candidates": status.rerank_candidates}


def _is_store(folder: Path) -> bool:
    return (folder / "catalog.sqlite").exists()


def run_e2e(*, n: int, model: str, seed: int = 0, store: Path | None = None, repeat: int = 50,
            progress: Progress = no_progress) -> dict:
    """Build (or reuse, with ``store``) a store of ``n`` vectors and measure query latency on it."""
    from img_agent.bench.ingest import random_encoder
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    out: dict = {"n": n, "model": model, "weights": "random (no download)", "k": 20}
    enc = random_encoder(model)
    tmp = None
    if store is None:
        tmp = Path(tempfile.mkdtemp(prefix="img-agent-e2e-"))
        store = tmp / "store"
    if _is_store(store):
        out["store"] = {"reused": str(store)}
    else:
        progress(0, f"building a store of {n:,}")
        out["store"] = build_store(store, n, enc, seed=seed, progress=progress)
    progress(1, "store")
    try:
        settings = Settings(data_dir=store, model=enc.name, pretrained=enc.pretrained)
        with Engine.open(settings, encoder=enc) as engine:
            status = engine.status()
            out["status"] = {"live": status.live, "index": status.index, "nprobe": status.nprobe}
            out.update(_interleaved(engine, list(QUERIES), repeat))
            progress(1, "engine + mcp in memory")
        out["mcp_stdio"] = _mcp_stdio(store, enc)
        progress(1, "mcp stdio")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out["meets_50ms"] = (out["search_text"]["p50_ms"] or 1e9) < 50
    stdio = out["mcp_stdio"]
    out["meets_1s_startup"] = "initialize_and_list_s" in stdio and stdio["initialize_and_list_s"] < 1
    return out


def _stats(times: list[float]) -> dict:
    return {"p50_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3),
            "mean_ms": round(float(np.mean(times)), 3), "queries": len(times)}


def _interleaved(engine, queries: list[str], repeat: int) -> dict:
    """Every way of answering a text query, interleaved query by query.

    On a shared machine a burst of load then hits all ways alike instead of whichever happened to run
    during it. Ways: ``encode_text`` (torch's default threads, and one thread), ``search_vectors`` of
    the encoded query, ``Engine.search_text`` (encode + search + records), and MCP ``search_by_text``
    through an in-memory client session, when the MCP server module is available.
    """
    import torch

    vecs = engine.encode_text(queries)
    default_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    def one_thread_encode(q: str) -> None:
        torch.set_num_threads(1)
        try:
            engine.encode_text([q])
        finally:
            torch.set_num_threads(default_threads)

    def engine_ways(i: int) -> None:
        q = queries[i % len(queries)]
        timed("encode_text", lambda: engine.encode_text([q]))
        timed("encode_text_1thread", lambda: one_thread_encode(q))
        timed("search_vectors", lambda: engine.search_vectors(vecs[i % len(queries)][None, :], 20))
        timed("search_text", lambda: engine.search_text(q, 20))

    mcp_error = None
    try:
        import anyio
        from mcp import Client

        from img_agent.tools.image_tools import ImageTools
        from img_agent.tools.mcp_server import create_server
    except ImportError as exc:
        mcp_error = f"not measured: {exc}"

    if mcp_error is None:
        server = create_server(ImageTools(engine), llm_configured=False)

        async def go() -> None:
            async with Client(server) as client:
                for i in range(-1, repeat):  # -1: warm-up round, not kept
                    engine_ways(max(i, 0))
                    args = {"query": queries[max(i, 0) % len(queries)], "k": 20, "thumbnails": 0}
                    t0 = time.perf_counter()
                    res = await client.call_tool("search_by_text", args)
                    times.setdefault("mcp_search_by_text", []).append((time.perf_counter() - t0) * 1e3)
                    if res.is_error:
                        raise RuntimeError(f"search_by_text failed: {res.content}")
                    if i < 0:
                        for v in times.values():
                            v.clear()

        anyio.run(go)
    else:
        for i in range(-1, repeat):
            engine_ways(max(i, 0))
            if i < 0:
                for v in times.values():
                    v.clear()
    out = {name: _stats(v) for name, v in times.items()}
    out["torch_threads"] = default_threads
    if mcp_error:
        out["mcp_search_by_text"] = {"error": mcp_error}
    else:
        out["mcp_search_by_text"]["thumbnails"] = 0
    return out


def _mcp_stdio(store: Path, encoder) -> dict:
    try:
        import anyio
        from mcp import ClientSession, StdioServerParameters, stdio_client
    except ImportError as exc:
        return {"error": f"not measured: {exc}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env["HF_HUB_OFFLINE"] = "1"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "img_agent", "serve", "--data-dir", str(store), "--model", encoder.name,
              "--pretrained", encoder.pretrained],
        env=env,
    )
    out: dict = {}

    async def go() -> None:
        t0 = time.perf_counter()
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                out["initialize_s"] = round(time.perf_counter() - t0, 3)
                tools = await session.list_tools()
                out["initialize_and_list_s"] = round(time.perf_counter() - t0, 3)
                out["tools"] = len(tools.tools)
                status = await session.call_tool("index_status", {})
                out["first_index_status_s"] = round(time.perf_counter() - t0, 3)
                out["index_status_ok"] = not status.is_error

    try:
        anyio.run(go)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the other numbers stand
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def run(options: Any) -> Path:
    """``bench e2e``: query latency at every size; writes e2e.json / e2e.md, returns e2e.md."""
    from img_agent.bench import report

    t0 = time.time()
    out_dir: Path = options.out
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = options.n or ([3_000] if options.quick else [1_000_000])
    model = getattr(options, "model", None) or ("tiny-test" if options.quick else "ViT-B-32")
    result = report.new_result("e2e", command=command_line(options), quick=options.quick,
                               config={"sizes": sizes, "model": model})
    result["runs"] = []
    md = out_dir / "e2e.md"
    for n in sizes:
        bar = ProgressBar(5, f"e2e N={n:,}", not options.no_progress)
        try:
            result["runs"].append(run_e2e(n=n, model=model, seed=options.seed, repeat=10 if options.quick else 50,
                                          store=getattr(options, "store", None), progress=bar))
        finally:
            bar.close()
        report.finish_result(result, t0)
        md = write_result(out_dir, "e2e", result, report.e2e_markdown(result))
    return md
