"""Faults the other harness modules leave open: a full disk without root, an id beyond int64 over MCP,
bounded query-image decodes, the header check of combined queries, and a non-loopback HTTP bind.

Each trial checks a clear error of the img_agent.errors tree (no traceback, no raw exception), that
nothing acknowledged is lost, and that no pixel of an oversized query image is decoded.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.types import TextContent
from PIL import Image, ImageFile

import img_agent
from img_agent.config import Settings
from img_agent.errors import StoreWriteError
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder
from img_agent.tools.confined import QUERY_DECODE_SLOTS
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.mcp_server import create_server
from img_agent.tools.sandbox import Sandbox

DIM = 32
ROOT = "/audit"
SRC = Path(img_agent.__file__).resolve().parents[1]


def vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_eng(data: Path) -> Engine:
    return Engine.open(Settings(data_dir=data, model="stub", merge_threshold=10**9), encoder=StubEncoder(DIM))


def assert_sound(eng: Engine, acked: list[int]) -> None:
    """Every acknowledged id is live and the top hit of its own stored vector."""
    assert eng.live_count == len(acked)
    ranked = eng.search_ids(eng.store.get(np.asarray(acked)), 1)
    assert [int(r[0][0]) for r in ranked] == acked


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


@pytest.fixture
def stub_tools(tmp_path):
    """Tools over a real engine (stub encoder) holding 20 images under :data:`ROOT`, confined to it."""
    engine = open_eng(tmp_path / "data")
    engine.add_vectors(vectors(20, 0), [f"{ROOT}/{i}.jpg" for i in range(20)])
    try:
        yield ImageTools(engine, Sandbox([ROOT], max_file_bytes=10_000_000))
    finally:
        engine.close()


# -- a full disk, made without root: the catalog's page budget, or a failing vector write --------
@pytest.mark.parametrize("where", ["catalog", "vectors"])
def test_disk_full_without_root_is_clear_and_keeps_acknowledged_adds(tmp_path, harness, monkeypatch, where):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        eng = open_eng(data)
        acked: list[int] = []
        for b in range(3):
            acked += eng.add_vectors(vectors(100, b), [f"/d/{b}/{i}.jpg" for i in range(100)])
        if where == "catalog":  # SQLite answers "database or disk is full" past this many pages
            [(pages,)] = eng.catalog._query("PRAGMA page_count")
            eng.catalog._query(f"PRAGMA max_page_count={pages + 2}")
        else:
            real_write = os.write

            def full(fd: int, data) -> int:
                if os.readlink(f"/proc/self/fd/{fd}").endswith("vectors.f32"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(fd, data)

            monkeypatch.setattr(os, "write", full)
        with pytest.raises(StoreWriteError) as err:
            for b in range(3, 100):
                acked += eng.add_vectors(vectors(100, b), [f"/d/{b}/{i}.jpg" for i in range(100)])
        monkeypatch.undo()
        text = str(err.value)
        assert "disk is full" in text and "committed before is kept" in text and "Traceback" not in text, text
        eng.close()
        with open_eng(data) as again:
            assert_sound(again, acked)
            acked += again.add_vectors(vectors(5, 200), [f"/e/{i}.jpg" for i in range(5)])  # space again: adds work
            assert_sound(again, acked)


# -- MCP: an id beyond int64 is the tool's own message ------------------------------------------
def test_mcp_remove_an_id_beyond_int64_is_a_clear_tool_error(stub_tools, harness):
    async def call(arguments: dict):
        async with Client(create_server(stub_tools, llm_configured=False)) as client:
            return await client.call_tool("remove_images", arguments)

    with harness.trial("input", faults=2):
        for ids in ([2**70], [-(2**64)]):
            result = anyio.run(call, {"ids": ids})
            assert result.is_error
            [message] = texts(result)
            assert f"No live image matched {ids[0]}" in message, message
            assert "internal" not in message.lower() and "Overflow" not in message
        mixed = anyio.run(call, {"ids": [3, 2**70]})
        assert not mixed.is_error, texts(mixed)
        assert mixed.structured_content["removed"] == [3]
        assert mixed.structured_content["not_found"] == [str(2**70)]
        assert stub_tools.engine.live_count == 19


# -- query images: declared size checked first, and decodes bounded -------------------------------
def test_combined_query_image_declaring_96_megapixels_is_refused_from_its_header(stub_tools, harness, monkeypatch):
    loads: list[tuple[int, int]] = []

    def spy_load(self):
        loads.append(self.size)
        raise MemoryError("the pixel decoder ran")

    bomb = base64.b64encode(png_declaring(10_000, 9_600)).decode()

    async def call():
        async with Client(create_server(stub_tools, llm_configured=False)) as client:
            return await client.call_tool("search_combined", {"terms": [{"image_base64": bomb, "weight": 2}]})

    with harness.trial("input", faults=1):
        monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
        result = anyio.run(call)
        assert result.is_error
        [message] = texts(result)
        assert "10000x9600 pixels exceeds the limit of 40,000,000 pixels" in message and "downscale" in message, message
        assert loads == []  # only the header was read


def test_query_image_decodes_are_bounded(stub_tools, harness):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def slow_search(data, k=None, filter=None, collapse=False):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.25)
        with lock:
            running[0] -= 1
        return []

    stub_tools.engine.search_image = slow_search
    go = threading.Event()
    errors: list[BaseException] = []

    def caller() -> None:
        go.wait()
        try:
            stub_tools.search_by_image(image_base64=image, k=1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with harness.trial("input", faults=1):
        threads = [threading.Thread(target=caller) for _ in range(QUERY_DECODE_SLOTS + 2)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
        assert peak[0] == QUERY_DECODE_SLOTS


# -- a non-loopback HTTP bind: a token made, Host/Origin still checked ----------------------------
def test_http_on_every_interface_makes_a_token_and_keeps_host_checks(tmp_path, harness):
    """The app 'serve --http --host 0.0.0.0' runs, built in-process (tests only ever bind loopback)."""
    from starlette.testclient import TestClient

    from img_agent.errors import ConfigError
    from img_agent.testing.fake_engine import FakeEngine
    from img_agent.tools.mcp_standalone import http_app, http_token

    token = http_token("0.0.0.0", None)
    assert token and len(token) >= 32 and http_token("127.0.0.1", None) is None
    settings = Settings(data_dir=tmp_path / "data", model="stub")
    server = create_server(ImageTools(FakeEngine(), Sandbox([ROOT], max_file_bytes=10_000_000)), llm_configured=False)
    with pytest.raises(ConfigError, match="needs a bearer token"):
        http_app(server, settings, host="0.0.0.0", port=8765, token=None)
    app = http_app(server, settings, host="0.0.0.0", port=8765, token=token)
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "audit", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    auth = {"Authorization": f"Bearer {token}"}
    with harness.trial("sandbox", faults=3), TestClient(app, base_url="http://127.0.0.1:8765") as http:
        refused = {
            "no token": http.post("/mcp", json=body, headers=accept).status_code,
            "forged Host": http.post("/mcp", json=body, headers={**accept, **auth, "Host": "evil.example"}).status_code,
            "forged Origin": http.post("/mcp", json=body, headers={**accept, **auth,
                                                                   "Origin": "http://evil.example"}).status_code,
        }
        assert refused == {"no token": 401, "forged Host": 421, "forged Origin": 403}, refused
        assert http.post("/mcp", json=body, headers={**accept, **auth}).status_code == 200


# -- an index string in the catalog is read, never handed to faiss to build ----------------------
@pytest.mark.parametrize("stored", ["IVF20000000,Flat", "Bogus,,", "Flat"])
def test_a_damaged_catalog_index_string_is_never_built_and_the_index_is_rebuilt(tmp_path, harness, monkeypatch,
                                                                                stored):
    """'IVF20000000,Flat' used to make every open allocate gigabytes; a string that does not describe
    the index file (also a plain 'Flat' for an IVF file) is reported and the index rebuilt from the vectors."""
    import sqlite3

    import faiss

    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        with Engine.open(Settings(data_dir=data, model="stub", merge_threshold=10**9, index_string="IVF4,Flat"),
                         encoder=StubEncoder(DIM)) as eng:
            acked = eng.add_vectors(vectors(300, 0), [f"/f/{i}.jpg" for i in range(300)])
            eng.merge()
        with sqlite3.connect(data / "catalog.sqlite") as db:
            db.execute("UPDATE meta SET value=? WHERE key='main_factory'", (stored,))
        built: list[str] = []
        real = faiss.index_factory

        def watched(dim, factory, *args):
            built.append(factory)
            return real(dim, factory, *args)

        monkeypatch.setattr(faiss, "index_factory", watched)
        with open_eng(data) as eng:
            assert not {"IVF20000000,Flat", "Bogus,,"} & set(built)  # the stored string was only read
            assert any("does not describe the index file" in n or "not accepted" in n or "unusable" in n
                       for n in eng.status().hints)
            assert_sound(eng, acked)


# -- a Milvus Lite store on a read-only disk -------------------------------------------------------
def test_a_milvus_lite_store_on_a_read_only_disk_searches_exactly(tmp_path, harness, caplog):
    """Milvus Lite must write its lock file, so on a read-only disk the store answers from its own vector
    file (every vector is there), says so once, and refuses changes clearly."""
    pytest.importorskip("milvus_lite")
    from img_agent.errors import StoreReadOnlyError
    from img_agent.testing.mounts import remount_read_only, tmpfs

    with harness.trial("store", faults=1), tmpfs(tmp_path / "ro", "64m") as mnt:
        data = mnt / "data"
        uri = str(data / "milvus.db")
        child = ("import sys, numpy as np; from img_agent.config import Settings; "
                 "from img_agent.index.engine import Engine; from img_agent.testing import StubEncoder; "
                 "x = np.random.default_rng(0).standard_normal((50, 32)).astype('f4'); "
                 "eng = Engine.open(Settings(data_dir=sys.argv[1], model='stub', vector_store=sys.argv[2]), "
                 "encoder=StubEncoder(32)); "
                 "eng.add_vectors(x / np.linalg.norm(x, axis=1, keepdims=True), [f'/m/{i}.jpg' for i in range(50)]); "
                 "eng.remove(ids=[7]); eng.close()")
        subprocess.run([sys.executable, "-c", child, str(data), uri], check=True, capture_output=True)
        acked = [i for i in range(50) if i != 7]
        remount_read_only(mnt)
        with Engine.open(Settings(data_dir=data, model="stub", vector_store=uri), encoder=StubEncoder(DIM)) as eng:
            status = eng.status()
            assert status.read_only and status.live == len(acked) and status.vector_store == uri
            assert sum("Milvus Lite cannot open" in hint for hint in status.hints) == 1
            assert_sound(eng, acked)
            filtered = eng.search_ids(eng.store.get(np.asarray([3])), 5)[0][0]
            assert 7 not in filtered and int(filtered[0]) == 3
            with pytest.raises(StoreReadOnlyError):
                eng.remove(ids=[3])
        assert "Traceback" not in caplog.text
