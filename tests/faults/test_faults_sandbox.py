"""Hostile input and sandbox escapes through the real surfaces: nothing leaks out of the allowed roots,
nothing outside them is destroyed, and hostile input gets a clear error instead of a traceback or a
huge allocation.

Surfaces: an MCP client session against a spawned server (stdio, and streamable HTTP with raw
requests), the in-memory MCP client over the real engine where a decoder must be watched, and the
CLI as a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.types import ImageContent, TextContent
from PIL import Image

import img_agent
from img_agent.config import Settings
from img_agent.testing import make_images

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SRC = Path(img_agent.__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def _cli(*args: str, data_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "img_agent", "--model", "tiny-test", "--data-dir", str(data_dir),
                           "--no-service", *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=180,
                          check=False)


def _texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def _when_loaded(session: ClientSession, name: str, arguments: dict):
    """Call a tool, calling again while the service reports that the model is still loading."""
    for _ in range(120):
        result = await session.call_tool(name, arguments)
        if not (result.is_error and "still loading" in _texts(result)[0]):
            return result
        await anyio.sleep(0.5)
    raise AssertionError("the model did not load")


def _open_engine(settings: Settings):
    from img_agent.index.engine import Engine

    return Engine.open(settings)


# ------------------------------------------------------------------------ thumbnails and removal


@pytest.fixture
def split_store(tmp_path: Path, settings: Settings) -> tuple[Path, Path, Path]:
    """A store indexed without confinement from ``inside`` (3 images) and ``outside`` (2 images); then one
    indexed file inside is replaced by a symbolic link to a file outside. Returns (inside, outside, link)."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    make_images(inside, 3)
    make_images(outside, 2, seed=99)
    engine = _open_engine(settings)
    try:
        report = engine.add_paths([inside, outside])
        assert len(report.added) == 5
    finally:
        engine.close()
    link = min(p for p in inside.rglob("*") if p.is_file())
    link.unlink()
    link.symlink_to(min(p for p in outside.rglob("*") if p.is_file()))
    return inside, outside, link


def _serve_params(settings: Settings, root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "img_agent", "serve", "--model", "tiny-test", "--data-dir", str(settings.data_dir),
              "--root", str(root)],
        env=_env(),
    )


async def test_mcp_thumbnails_stay_inside_the_roots(tmp_path: Path, settings: Settings, split_store,
                                                    harness) -> None:
    inside, _outside, link = split_store
    log = tmp_path / "server.log"
    with log.open("w") as errlog, anyio.fail_after(120):
        async with stdio_client(_serve_params(settings, inside), errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()

            with harness.trial("sandbox", faults=2):  # images indexed outside the root, a link swapped in
                found = await _when_loaded(session, "search_by_text", {"query": "anything", "k": 10, "thumbnails": 10})
                assert not found.is_error, _texts(found)
                hits = found.structured_content["hits"]
                assert len(hits) == 5
                readable = [h for h in hits if h["path"].startswith(str(inside)) and h["path"] != str(link)]
                images = [b for b in found.content if isinstance(b, ImageContent)]
                assert len(images) == len(readable) == 2
                refused = [t for t in _texts(found) if "no thumbnail" in t]
                assert len(refused) == 3 and all("outside the allowed folders" in t for t in refused), refused
                assert all("Traceback" not in t for t in _texts(found))
    assert "Traceback" not in log.read_text()


async def test_mcp_removal_stays_inside_the_roots(tmp_path: Path, settings: Settings, split_store,
                                                  harness) -> None:
    inside, outside, _link = split_store
    log = tmp_path / "server.log"
    with log.open("w") as errlog, anyio.fail_after(120):
        async with stdio_client(_serve_params(settings, inside), errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            listed = await _when_loaded(session, "search_by_text", {"query": "anything", "k": 10, "thumbnails": 0})
            hits = listed.structured_content["hits"]

            with harness.trial("sandbox", faults=1):  # removing everything through the file system root
                everything = await session.call_tool("remove_images", {"paths": ["/"]})
                assert everything.is_error
                [message] = _texts(everything)
                assert "outside the allowed folders" in message and "nothing was removed" in message, message
                outside_ids = [h["id"] for h in hits if h["path"].startswith(str(outside))]
                by_id = await session.call_tool("remove_images", {"ids": outside_ids})
                assert by_id.is_error and "outside the allowed folders" in _texts(by_id)[0]
                escape = await session.call_tool("remove_images", {"paths": [str(inside / ".." / "outside")]})
                assert escape.is_error and "outside the allowed folders" in _texts(escape)[0]

            with harness.trial("sandbox", faults=0):  # a dry run lists without removing; the real one removes
                preview = await session.call_tool("remove_images", {"paths": [str(inside)], "dry_run": True})
                assert not preview.is_error, _texts(preview)
                assert preview.structured_content["dry_run"] is True
                assert len(preview.structured_content["removed"]) == 3
                status = await session.call_tool("index_status", {})
                assert status.structured_content["live"] == 5
                removed = await session.call_tool("remove_images", {"paths": [str(inside)]})
                assert sorted(removed.structured_content["removed"]) == sorted(preview.structured_content["removed"])
                status = await session.call_tool("index_status", {})
                assert status.structured_content["live"] == 2
    assert "Traceback" not in log.read_text()


# ------------------------------------------------------------------------ in-process real engine


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels (its data is a few zero rows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def real_tools(settings: Settings, image_dir: Path):
    from img_agent.tools.image_tools import ImageTools
    from img_agent.tools.sandbox import Sandbox

    engine = _open_engine(settings)
    tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=settings.max_file_bytes))
    tools.add_images([str(image_dir)])
    try:
        yield tools
    finally:
        engine.close()


async def test_query_image_declaring_96_megapixels_is_refused_from_its_header(real_tools, monkeypatch,
                                                                             harness) -> None:
    from PIL import ImageFile

    from img_agent.tools.mcp_server import create_server

    loads: list[tuple[int, int]] = []

    def spy_load(self):
        loads.append(self.size)
        raise MemoryError("the pixel decoder ran")

    bomb = base64.b64encode(_png_declaring(10_000, 9_600)).decode()
    with harness.trial("input", faults=1):
        monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
        async with Client(create_server(real_tools, llm_configured=False)) as client:
            result = await client.call_tool("search_by_image", {"image_base64": bomb, "thumbnails": 0})
        assert result.is_error
        [message] = _texts(result)
        assert "10000x9600 pixels exceeds the limit of 40,000,000 pixels" in message, message
        assert "downscale" in message
        assert loads == []  # only the header was read


async def test_rebuild_with_a_huge_nlist_is_refused_before_faiss_allocates(real_tools, monkeypatch,
                                                                           harness) -> None:
    import faiss

    from img_agent.tools.mcp_server import create_server

    built: list[str] = []
    real_factory = faiss.index_factory

    def watched(dim, factory, *args):
        built.append(factory)
        if "20000000" in factory:
            raise MemoryError("faiss allocated the huge index")
        return real_factory(dim, factory, *args)

    with harness.trial("input", faults=1):
        monkeypatch.setattr(faiss, "index_factory", watched)
        started = time.perf_counter()
        async with Client(create_server(real_tools, llm_configured=False)) as client:
            result = await client.call_tool("rebuild_index", {"index_string": "IVF20000000,Flat"})
        elapsed = time.perf_counter() - started
        assert result.is_error
        [message] = _texts(result)
        assert "nlist=20,000,000" in message and "Accepted:" in message and "IVF1024,Flat" in message, message
        assert built == [] and elapsed < 5.0
        assert real_tools.engine.live_count == 12  # the store is untouched


# ------------------------------------------------------------------------ streamable HTTP


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert time.monotonic() < deadline, "the HTTP server did not start listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def _initialize(http: httpx.Client, url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "fault-test", "version": "0"}}}
    return http.post(url, json=body, headers={"Accept": "application/json, text/event-stream", **headers})


def _rpc_payload(response: httpx.Response) -> dict:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


def _noise_png(path: Path, min_bytes: int) -> bytes:
    side = int((min_bytes / 3) ** 0.5) + 16
    pixels = np.random.default_rng(7).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=0)
    data = path.read_bytes()
    assert len(data) >= min_bytes
    return data


def test_http_requires_the_token_keeps_host_checks_and_fits_16_mib_images(tmp_path: Path, image_dir: Path,
                                                                          harness) -> None:
    port, token = _free_port(), "test-token-4242"
    url = f"http://127.0.0.1:{port}/mcp"
    server = subprocess.Popen(
        [sys.executable, "-m", "img_agent", "serve", "--http", "--port", str(port), "--token", token,
         "--model", "tiny-test", "--data-dir", str(tmp_path / "data"), "--root", str(image_dir)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_listening(server, port)
        auth = {"Authorization": f"Bearer {token}"}
        forged = {"Host": "evil.example", "Origin": "http://evil.example"}
        with httpx.Client(timeout=60) as http:
            with harness.trial("sandbox", faults=2):  # forged Host/Origin, missing or wrong token
                for headers in (forged, {**forged, **auth}, {}, {"Authorization": "Bearer wrong"}):
                    refused = _initialize(http, url, headers)
                    assert refused.status_code in (401, 403, 421), (headers, refused.status_code, refused.text)
                no_token = _initialize(http, url, {})
                assert no_token.status_code == 401 and "Authorization: Bearer" in no_token.json()["error"]["message"]
                served = _initialize(http, url, auth)
                assert served.status_code == 200, served.text
                assert _rpc_payload(served)["result"]["serverInfo"]["name"] == "img-agent"

            session = {**auth, "mcp-session-id": served.headers["mcp-session-id"],
                       "Accept": "application/json, text/event-stream"}
            http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)

            with harness.trial("input", faults=1):  # a 6 MiB image reaches the tool
                image = base64.b64encode(_noise_png(tmp_path / "big.png", 6 * 1024 * 1024)).decode()
                call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "search_by_image", "arguments": {"image_base64": image, "thumbnails": 0}}}
                answer = http.post(url, json=call, headers=session)
                assert answer.status_code == 200, answer.text[:500]
                result = _rpc_payload(answer)["result"]
                assert "The index is empty" in result["content"][0]["text"]  # the tool's own answer

            with harness.trial("input", faults=1):  # a 30 MiB body gets a message, not a bare 413
                huge = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                        "params": {"name": "search_by_image", "arguments": {"image_base64": "A" * (30 << 20)}}}
                too_large = http.post(url, json=huge, headers=session)
                assert too_large.status_code == 413
                message = too_large.json()["error"]["message"]
                assert "MiB" in message and "smaller image" in message, message
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err, err


# ------------------------------------------------------------------------ the CLI


def test_index_skips_undecodable_names_and_unsupported_formats(tmp_path: Path, harness) -> None:
    folder = tmp_path / "pictures"
    make_images(folder, 3)
    first = min(folder.rglob("*.jpg"))
    with harness.trial("input", faults=3):
        shutil.copy(first, os.fsencode(folder) + b"/caf\xe9.jpg")  # Latin-1 name: not UTF-8
        (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
        (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
        proc = _cli("index", str(folder), "--json", data_dir=tmp_path / "data", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        report = json.loads(proc.stdout)["report"]
        assert len(report["added"]) == 3
        reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
        assert reasons["caf\\xe9.jpg"].startswith("the file name is not valid UTF-8: rename it")
        assert reasons["phone.heic"].startswith("truncated or corrupt image")  # decoded (pillow-heif), found damaged
        assert reasons["logo.svg"].startswith("SVG is a vector format: convert it to PNG")


def test_cli_remove_refuses_ambiguous_and_non_ascii_ids(tmp_path: Path, image_dir: Path, harness) -> None:
    data = tmp_path / "data"
    assert _cli("index", str(image_dir), data_dir=data, cwd=tmp_path).returncode == 0
    (tmp_path / "5").mkdir()
    with harness.trial("input", faults=1):  # a non-ASCII digit
        proc = _cli("remove", "\u00b2", data_dir=data, cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("error: ") and "No live image matched" in proc.stderr
    with harness.trial("input", faults=1):  # digits that also name a folder here
        proc = _cli("remove", "5", data_dir=data, cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "image id 5" in proc.stderr and str(tmp_path / "5") in proc.stderr
        assert "--id" in proc.stderr and "--path" in proc.stderr
        preview = _cli("remove", "--id", "5", "--dry-run", "--json", data_dir=data, cwd=tmp_path)
        assert json.loads(preview.stdout) == {"removed": [5], "already_removed": [], "not_found": [], "dry_run": True}
        status = json.loads(_cli("status", "--json", data_dir=data, cwd=tmp_path).stdout)
        assert status["live"] == 12
        removed = _cli("remove", "--id", "5", "--json", data_dir=data, cwd=tmp_path)
        assert json.loads(removed.stdout)["removed"] == [5]
