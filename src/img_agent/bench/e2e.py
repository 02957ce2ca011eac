"""End-to-end query latency: text → CLIP text encoder → engine search, and the same through MCP.

A store of N synthetic CLIP-like vectors is built through the engine (``add_vectors`` + ``merge``,
the ``auto`` index for N) with a ViT-B-32 text encoder of random weights attached (no download:
the compute is the real model's; the results are meaningless, the latency is not). Measured, one
query at a time after a warm-up:

- ``encode_text`` alone;
- ``Engine.search_text`` (encode + search + catalog lookups), k=20;
- MCP ``search_by_text`` through an in-memory client session (``mcp.Client`` on the server
  object: JSON-RPC, validation, rendering, no transport), k=20, no thumbnails (the store's
  paths are synthetic);
- MCP over stdio: a fresh ``python -m img_agent.tools.mcp_server`` process on the same store,
  time to ``initialize`` + ``tools/list``, and to the first ``index_status`` (which waits for the
  engine to open in the server's background thread).

Targets (issue 5): ``initialize`` + ``tools/list`` under 1 s; a warm text query under 50 ms at 1M.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from img_agent.bench.metrics import Timer, percentile

log = logging.getLogger(__name__)

QUERIES = (
    "a red bicycle leaning against a brick wall", "two dogs playing in the snow", "sunset over the ocean",
    "a bowl of ramen with chopsticks", "city skyline at night", "a child blowing out birthday candles",
    "mountain lake with pine trees", "a cat sleeping on a laptop keyboard", "old black and white family photo",
    "screenshot of a spreadsheet", "wedding couple dancing", "close-up of a sunflower", "a crowded train station",
    "receipt from a restaurant", "a whiteboard covered in diagrams", "snowboarder jumping", "foggy forest path",
    "a plate of sushi", "vintage car parked on a street", "hot air balloons in the sky",
)


def _lat(fn, queries: list[str], repeat: int) -> dict:
    fn(queries[0])  # warm-up
    times = []
    for i in range(repeat):
        q = queries[i % len(queries)]
        with Timer() as t:
            fn(q)
        times.append(t.s * 1e3)
    return {"p50_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3),
            "mean_ms": round(float(np.mean(times)), 3), "queries": repeat}


def build_store(store: Path, n: int, encoder, *, seed: int = 0, progress=lambda a, m: None) -> dict:
    """A store of n synthetic vectors with ``encoder`` recorded as its model; the auto index built."""
    from img_agent.bench.data import synthetic
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    settings = Settings(data_dir=store, model=encoder.name, merge_threshold=10**12)
    x = synthetic(n, encoder.dim, seed=seed)
    t0 = time.perf_counter()
    with Engine.open(settings, encoder=encoder) as engine:
        step = 50_000
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


def run_e2e(*, n: int, model: str, seed: int = 0, store: Path | None = None, repeat: int = 50,
            progress=lambda a, m: None) -> dict:
    from img_agent.bench.ingest import random_encoder
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    out: dict = {"n": n, "model": model, "weights": "random (no download)", "k": 20}
    enc = random_encoder(model)
    tmp = None
    if store is None:
        tmp = Path(tempfile.mkdtemp(prefix="img-agent-e2e-"))
        store = tmp / "store"
        progress(0, f"building a store of {n:,}")
        out["store"] = build_store(store, n, enc, seed=seed, progress=progress)
    progress(1, "store")
    try:
        settings = Settings(data_dir=store, model=enc.name)
        queries = list(QUERIES)
        with Engine.open(settings, encoder=enc) as engine:
            out["status"] = {"live": engine.status().live, "index": engine.status().index}
            out["encode_text"] = _lat(lambda q: engine.encode_text([q]), queries, repeat)
            out["search_text"] = _lat(lambda q: engine.search_text(q, 20), queries, repeat)
            vec = engine.encode_text(queries)
            out["search_vectors"] = _lat(lambda q: engine.search_vectors(vec[queries.index(q)][None, :], 20),
                                         queries, repeat)
            progress(1, "engine")
            out["mcp_in_memory"] = _mcp_in_memory(engine, queries, repeat)
            progress(1, "mcp in memory")
        out["mcp_stdio"] = _mcp_stdio(store, enc)
        progress(1, "mcp stdio")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out["meets_50ms"] = (out["search_text"]["p50_ms"] or 1e9) < 50
    stdio = out["mcp_stdio"]
    out["meets_1s_startup"] = "initialize_and_list_s" in stdio and stdio["initialize_and_list_s"] < 1
    return out


def _mcp_in_memory(engine, queries: list[str], repeat: int) -> dict:
    try:
        import anyio
        from mcp import Client

        from img_agent.tools.definitions import ImageTools
        from img_agent.tools.mcp_server import create_server
    except ImportError as exc:
        return {"error": f"not measured: {exc}"}

    server = create_server(ImageTools(engine), llm_configured=False)
    times: list[float] = []

    async def go() -> None:
        async with Client(server) as client:
            args = {"query": queries[0], "k": 20, "thumbnails": 0}
            res = await client.call_tool("search_by_text", args)
            if res.is_error:
                raise RuntimeError(f"search_by_text failed: {res.content}")
            for i in range(repeat):
                args = {"query": queries[i % len(queries)], "k": 20, "thumbnails": 0}
                t0 = time.perf_counter()
                await client.call_tool("search_by_text", args)
                times.append((time.perf_counter() - t0) * 1e3)

    anyio.run(go)
    return {"p50_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3),
            "queries": len(times), "thumbnails": 0}


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
        args=["-m", "img_agent.tools.mcp_server", "--data-dir", str(store), "--model", encoder.name,
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


def main(args) -> int:
    from img_agent.bench import report
    from img_agent.bench.cli import _command_line, _Progress

    t0 = time.time()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = args.n or ([3_000] if args.quick else [1_000_000])
    model = getattr(args, "model", None) or ("tiny-test" if args.quick else "ViT-B-32")
    result = report.new_result("e2e", command=_command_line(args), quick=args.quick,
                               config={"sizes": sizes, "model": model})
    result["runs"] = []
    for n in sizes:
        bar = _Progress(5, f"e2e N={n:,}", not args.no_progress)
        try:
            result["runs"].append(run_e2e(n=n, model=model, seed=args.seed, repeat=10 if args.quick else 50,
                                          store=getattr(args, "store", None), progress=bar))
        finally:
            bar.close()
        report.finish_result(result, t0)
        report.write_json(out_dir / "e2e.json", result)
        (out_dir / "e2e.md").write_text(report.e2e_markdown(result))
    print(out_dir / "e2e.md")
    return 0
