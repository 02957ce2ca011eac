"""``bench service``: what the resident service costs and saves, as ratios measured in one run.

On a store of generated images, with the service warm, measured round-robin (one of each per round,
so a burst of load from other processes hits every way alike):

- a bare ``python -c pass`` start (the unit of the start-up ratios);
- the CLI ``img-agent --json search TEXT`` as a whole process;
- a stdio bridge: process start until ``initialize`` + ``tools/list`` are answered, and how long it
  takes to exit once stdin closes;
- MCP ``search_by_text`` through a long-lived bridge, against the same call on an in-process MCP
  server over an identical store (the in-memory SDK client: JSON-RPC and validation, no transport).

Then memory (the service plus three bridges, against one standalone server that loads the model
itself) and a cold start (service stopped: bridge start until its first ``search_by_text`` is
answered, with results or with the "model is loading, retry" error).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from img_agent.bench.common import ProgressBar, command_line, write_result
from img_agent.bench.metrics import percentile

QUERY = "a red square on a blue background"


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class StdioPeer:
    """A raw JSON-RPC client of one stdio MCP server process (no SDK: exact timings)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env)
        self._ids = 0

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._ids += 1
        self._send({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params or {}})
        out: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        while True:
            line = out.readline()
            if not line:
                raise RuntimeError(f"the server closed its output during {method}")
            message = json.loads(line)
            if message.get("id") == self._ids:
                return message

    def notify(self, method: str) -> None:
        self._send({"jsonrpc": "2.0", "method": method})

    def _send(self, message: dict[str, Any]) -> None:
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps(message).encode() + b"\n")
        stdin.flush()

    def initialize(self) -> None:
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "img-agent-bench", "version": "1"}})
        self.notify("notifications/initialized")

    def search(self, k: int = 20) -> dict[str, Any]:
        return self.request("tools/call", {"name": "search_by_text", "arguments": {"query": QUERY, "k": k}})

    def close(self) -> float:
        """Close stdin; seconds until the process exited."""
        t = time.perf_counter()
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.perf_counter() - t


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2),
            "min_ms": round(min(ms), 2), "runs": len(ms)}


def run_service_bench(*, images: int, rounds: int, model: str, work: Path, progress=lambda a, m: None) -> dict:
    """Every measurement above on two identical stores under ``work``; returns the result run."""
    from mcp import Client

    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.service.client import ServiceClient
    from img_agent.service.remote import RemoteTools
    from img_agent.testing import make_images
    from img_agent.tools.image_tools import ImageTools
    from img_agent.tools.mcp_server import create_server

    env = {k: v for k, v in os.environ.items() if not k.startswith("IMG_AGENT_")}
    env.update({"XDG_RUNTIME_DIR": str(work / "run"), "HF_HUB_OFFLINE": "1"})
    (work / "run").mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = env["XDG_RUNTIME_DIR"]  # this process's clients too (run() restores it)
    folder, store, mirror = work / "images", work / "store", work / "store-in-process"
    make_images(folder, images, size=(160, 120))
    cli = [sys.executable, "-m", "img_agent", "--data-dir", str(store)]
    client = ServiceClient(store, launch_args=["--model", model], client="bench", roots=[str(folder)])
    tools = RemoteTools(client)
    client.ensure()
    tools.add_images([str(folder)])
    tools.search_by_text(QUERY)  # the model is warm
    progress(1, "store built")

    with Engine.open(Settings(data_dir=mirror, model=model)) as engine:
        engine.add_paths([folder])
    progress(1, "in-process store built")

    bare: list[float] = []
    cli_ms: list[float] = []
    init_ms: list[float] = []
    exit_ms: list[float] = []
    bridged: list[float] = []
    in_process: list[float] = []
    long_bridge = StdioPeer([*cli, "serve", "--root", str(folder)], env)
    long_bridge.initialize()
    long_bridge.search()

    async def in_memory_rounds(engine: Engine) -> None:
        server = create_server(ImageTools(engine), llm_configured=False)
        async with Client(server) as mcp:
            await mcp.call_tool("search_by_text", {"query": QUERY, "k": 20})
            for _ in range(rounds):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
                bare.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                subprocess.run([*cli, "--json", "search", QUERY, "-k", "5"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                cli_ms.append((time.perf_counter() - t) * 1e3)
                peer = StdioPeer([*cli, "serve"], env)
                peer.initialize()
                peer.request("tools/list")
                init_ms.append((time.perf_counter() - peer.started) * 1e3)
                exit_ms.append(peer.close() * 1e3)
                t = time.perf_counter()
                answer = long_bridge.search()
                bridged.append((time.perf_counter() - t) * 1e3)
                if "result" not in answer:
                    raise RuntimeError(f"search through the bridge failed: {answer}")
                t = time.perf_counter()
                await mcp.call_tool("search_by_text", {"query": QUERY, "k": 20})
                in_process.append((time.perf_counter() - t) * 1e3)
                progress(1, "round")

    import anyio

    with Engine.open(Settings(data_dir=mirror, model=model)) as engine:
        engine.warm_up()
        anyio.run(in_memory_rounds, engine)

    # memory: the service and three bridges, against one standalone server that loads the model itself
    bridges = [StdioPeer([*cli, "serve"], env) for _ in range(3)]
    for peer in bridges:
        peer.initialize()
        peer.search()
    service_pid = client.health().pid  # type: ignore[union-attr]
    shared = _rss(service_pid) + sum(_rss(p.proc.pid) for p in bridges) + _rss(long_bridge.proc.pid)
    for peer in [*bridges, long_bridge]:
        peer.close()
    standalone = StdioPeer([sys.executable, "-c", "import sys; from img_agent.config import Settings; "
                            "from img_agent.tools.mcp_standalone import serve; "
                            f"serve(Settings(data_dir={str(mirror)!r}, model={model!r}))"], env)
    standalone.initialize()
    while "model is still loading" in json.dumps(standalone.search()):
        time.sleep(0.2)
    one_server = _rss(standalone.proc.pid)
    standalone.close()
    progress(1, "memory")

    # cold start: no service; a bridge's first search is answered (results, or "loading, retry") within
    client.stop()
    cold = StdioPeer([*cli, "serve", "--root", str(folder)], env)
    cold.initialize()
    first = cold.search()
    first_s = time.perf_counter() - cold.started
    first_text = json.dumps(first)
    cold.close()
    client.stop()
    progress(1, "cold start")

    bare_p50 = percentile(bare, 50)
    return {
        "images": images, "rounds": rounds, "model": model,
        "bare_python": _stats(bare),
        "cli_search_json": _stats(cli_ms), "cli_over_bare": round(percentile(cli_ms, 50) / bare_p50, 2),
        "bridge_initialize_tools_list": _stats(init_ms),
        "bridge_init_over_bare": round(percentile(init_ms, 50) / bare_p50, 2),
        "bridge_exit_after_stdin_closes": _stats(exit_ms),
        "mcp_search_bridged": _stats(bridged), "mcp_search_in_process": _stats(in_process),
        "bridged_over_in_process": round(percentile(bridged, 50) / percentile(in_process, 50), 2),
        "memory_service_and_3_bridges_bytes": shared, "memory_one_standalone_server_bytes": one_server,
        "memory_ratio": round(shared / max(one_server, 1), 2),
        "cold_first_search_s": round(first_s, 2),
        "cold_first_search_answer": "loading" if "still loading" in first_text else (
            "error" if '"isError": true' in first_text else "results"),
    }


def markdown(result: dict) -> str:
    r = result["runs"][0]
    rows = [
        ("bare `python -c pass`", f"{r['bare_python']['p50_ms']:.0f} ms", "1 (unit)", "-"),
        ("CLI `img-agent --json search TEXT` (whole process, warm service)", f"{r['cli_search_json']['p50_ms']:.0f} ms",
         f"{r['cli_over_bare']}x bare", "<= 10x"),
        ("stdio bridge: start -> initialize + tools/list", f"{r['bridge_initialize_tools_list']['p50_ms']:.0f} ms",
         f"{r['bridge_init_over_bare']}x bare", "<= 5x"),
        ("bridge exit after stdin closes", f"{r['bridge_exit_after_stdin_closes']['p50_ms']:.0f} ms", "-", "-"),
        ("MCP search_by_text through a bridge", f"{r['mcp_search_bridged']['p50_ms']:.1f} ms",
         f"{r['bridged_over_in_process']}x in-process", "<= 1.5x"),
        ("MCP search_by_text in-process", f"{r['mcp_search_in_process']['p50_ms']:.1f} ms", "1 (unit)", "-"),
        ("memory: service + 3 bridges", f"{r['memory_service_and_3_bridges_bytes'] / 2**20:.0f} MiB",
         f"{r['memory_ratio']}x one server", "< 1.3x"),
        ("memory: one standalone server", f"{r['memory_one_standalone_server_bytes'] / 2**20:.0f} MiB", "1 (unit)", "-"),
        ("cold start: bridge start -> first search answered", f"{r['cold_first_search_s']:.2f} s",
         f"answer: {r['cold_first_search_answer']}", "<= 5 s"),
    ]
    lines = [
        "# Service benchmark", "",
        f"Command: `{result['meta']['command']}`. Model {r['model']}, {r['images']} images, {r['rounds']} rounds "
        "(medians; every way measured once per round).", "",
        "| measurement | median | ratio | target |", "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
    ]
    return "\n".join(lines)


def run(options: Any) -> Path:
    """``bench service``: writes service.json / service.md into ``options.out``; returns service.md."""
    from img_agent.bench import report

    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    rounds = options.rounds or (5 if options.quick else 30)
    images = options.images or (12 if options.quick else 200)
    model = getattr(options, "model", None) or "tiny-test"
    t0 = time.time()
    result = report.new_result("service", command=command_line(options), quick=options.quick,
                               config={"rounds": rounds, "images": images, "model": model})
    bar = ProgressBar(rounds + 5, "service", not options.no_progress)
    work = Path(tempfile.mkdtemp(prefix="img-agent-bench-service-"))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    try:
        result["runs"] = [run_service_bench(images=images, rounds=rounds, model=model, work=work, progress=bar)]
    finally:
        bar.close()
        if runtime is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = runtime
        shutil.rmtree(work, ignore_errors=True)
    report.finish_result(result, t0)
    return write_result(out, "service", result, markdown(result))
