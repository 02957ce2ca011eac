"""End to end: the real server spawned as a process (tiny random-weight CLIP, real engine), driven by
the SDK's client over stdio (every tool, structured content, thumbnails, progress, isError results)
and over streamable HTTP (a smoke test)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.types import ImageContent, TextContent

import img_agent
from img_agent.tools import TOOL_NAMES
from img_agent.tools.image_tools import EMPTY_INDEX_MESSAGE
from img_agent.tools.shapes import AnswerResult, SearchResult

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SRC = Path(img_agent.__file__).resolve().parents[1]
SERVE = ["-m", "img_agent", "serve"]
"""The server as an MCP client configuration starts it: ``python -m img_agent serve [options]``."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _params(entry: list[str], data_dir: Path, root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[*entry, "-v", "--model", "tiny-test", "--data-dir", str(data_dir), "--root", str(root)],
        env=_env(),
    )


def texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def _tools_listed(params: StdioServerParameters, errlog) -> tuple[float, list[str]]:
    started = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
        return time.perf_counter() - started, [tool.name for tool in listed.tools]


async def test_serve_lists_tools_before_the_model_loads(tmp_path: Path, image_dir: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("w") as errlog:
        elapsed, names = await _tools_listed(_params(SERVE, tmp_path / "data", image_dir), errlog)
    assert names == list(TOOL_NAMES)
    print(f"process start -> initialize + tools/list: {elapsed:.2f} s")
    assert elapsed < 5.0
    assert "Model tiny-test loaded" not in log.read_text()  # listed while the model was still loading


async def test_every_tool_over_stdio(tmp_path: Path, image_dir: Path) -> None:
    (image_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes((image_dir / "img_0000.jpg").read_bytes())
    params = _params(SERVE, tmp_path / "data", image_dir)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    log = tmp_path / "server.log"
    with log.open("w") as errlog, anyio.fail_after(120):
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert [t.name for t in (await session.list_tools()).tools] == list(TOOL_NAMES)

            status = await session.call_tool("index_status", {})
            assert not status.is_error and status.structured_content["live"] == 0
            empty = await session.call_tool("search_by_text", {"query": "anything"})
            assert empty.is_error and texts(empty) == [EMPTY_INDEX_MESSAGE]

            added = await session.call_tool("add_images", {"paths": [str(image_dir)]}, progress_callback=on_progress)
            assert not added.is_error, texts(added)
            report = added.structured_content
            assert len(report["added"]) == 12
            assert [item["path"] for item in report["skipped"]] == [str(image_dir / "corrupt.jpg")]
            assert progress and progress[-1][0] == progress[-1][1]

            found = await session.call_tool("search_by_text", {"query": "a bright gradient", "k": 5, "thumbnails": 2})
            assert not found.is_error
            result = SearchResult.model_validate(found.structured_content)
            assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
            assert all(-1.0 <= h.score <= 1.0 for h in result.hits)
            assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
            images = [b for b in found.content if isinstance(b, ImageContent)]
            assert len(images) == 2 and all(b.mime_type == "image/jpeg" for b in images)
            assert base64.b64decode(images[0].data)[:2] == b"\xff\xd8"

            by_path = await session.call_tool("search_by_image", {"path": "img_0001.jpg", "k": 3, "thumbnails": 0})
            assert not by_path.is_error
            assert by_path.structured_content["hits"][0]["path"] == str(image_dir / "img_0001.jpg")  # itself first
            first_id = by_path.structured_content["hits"][0]["id"]
            data = base64.b64encode((image_dir / "img_0002.png").read_bytes()).decode()
            by_data = await session.call_tool("search_by_image", {"image_base64": data, "k": 1, "thumbnails": 0})
            assert by_data.structured_content["hits"][0]["path"] == str(image_dir / "img_0002.png")
            similar = await session.call_tool("search_by_image", {"image_id": first_id, "k": 4})
            assert first_id not in [h["id"] for h in similar.structured_content["hits"]]

            # concurrent calls share the one engine
            concurrent: list = []

            async def search(text: str) -> None:
                concurrent.append(await session.call_tool("search_by_text", {"query": text, "k": 3, "thumbnails": 1}))

            async with anyio.create_task_group() as group:
                for i in range(6):
                    group.start_soon(search, f"query number {i}")
            assert len(concurrent) == 6 and not any(r.is_error for r in concurrent)

            expanded = await session.call_tool("search_by_text", {"query": "red", "expand": True, "thumbnails": 0})
            assert any("No LLM configured" in note for note in expanded.structured_content["notes"])

            answer = await session.call_tool("ask_about_images", {"question": "Which image is the reddest?", "k": 3})
            parsed = AnswerResult.model_validate(answer.structured_content)
            assert parsed.answer is None and len(parsed.sources) == 3 and not parsed.llm_used

            removed = await session.call_tool("remove_images", {"ids": [first_id]})
            assert removed.structured_content["removed"] == [first_id]
            merged = await session.call_tool("merge_buffer", {})
            assert not merged.is_error and merged.structured_content["operation"] == "merge"
            rebuilt = await session.call_tool("rebuild_index", {})
            assert not rebuilt.is_error and rebuilt.structured_content["moved"] == 11
            after = await session.call_tool("search_by_text", {"query": "a bright gradient", "k": 20, "thumbnails": 0})
            assert first_id not in [h["id"] for h in after.structured_content["hits"]]
            assert len(after.structured_content["hits"]) == 11

            failures = {
                "bad path": ("search_by_image", {"path": str(image_dir / "missing.jpg")}, "No file or folder"),
                "unknown id": ("search_by_image", {"image_id": 999}, "999"),
                "outside roots": ("search_by_image", {"path": str(outside / "secret.jpg")}, "outside the allowed folders"),
                "escape": ("add_images", {"paths": [str(image_dir / ".." / "outside")]}, "outside the allowed folders"),
                "undecodable": ("search_by_image", {"path": "corrupt.jpg"}, "'corrupt.jpg' cannot be used as a query image ("),
                "bad argument": ("search_by_text", {"query": "x", "k": 0}, "greater than or equal to 1"),
                "unknown removal": ("remove_images", {"ids": [987654]}, "987654"),
            }
            for label, (name, arguments, expected) in failures.items():
                result = await session.call_tool(name, arguments)
                assert result.is_error, label
                [message] = texts(result)
                assert expected in message, (label, message)
                assert not message.startswith("Error executing tool"), (label, message)
    server_log = log.read_text()
    assert "Traceback" not in server_log, server_log


async def test_streamable_http(tmp_path: Path, image_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [*SERVE, "--http", "--port", str(port), "--model", "tiny-test",
            "--data-dir", str(tmp_path / "data"), "--root", str(image_dir)]
    server = subprocess.Popen([sys.executable, *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it listens
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the HTTP server did not start listening"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await anyio.sleep(0.1)
        with anyio.fail_after(60):
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert [t.name for t in (await client.list_tools()).tools] == list(TOOL_NAMES)
                status = await client.call_tool("index_status", {})
                assert not status.is_error and status.structured_content["live"] == 0
                refused = await client.call_tool("add_images", {"paths": ["/etc"]})
                assert refused.is_error and "outside the allowed folders" in texts(refused)[0]
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err, err
