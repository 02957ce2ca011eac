"""A Milvus-backed store served by its resident service: the CLI, Python clients and the tools work unchanged.

Milvus Lite opens its file in one process only (a second opener fails), so on Lite one service serves
every client of the store; the test checks both halves: the clients share the service's view, and
another process reaching for the same file is refused with a message saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from img_agent.config import Settings
from img_agent.errors import VectorStoreError
from img_agent.index.engine import Engine
from img_agent.service.remote import connect
from img_agent.testing import StubEncoder

from test_service import cli

pytestmark = pytest.mark.slow


def test_cli_and_python_clients_share_a_milvus_store(tmp_path: Path, image_dir: Path) -> None:
    data, uri = tmp_path / "store", str(tmp_path / "vectors" / "milvus.db")
    env = {"IMG_AGENT_VECTOR_STORE": uri}
    cli("--model", "tiny-test", "index", str(image_dir), data_dir=data, env=env)
    status = json.loads(cli("status", "--json", data_dir=data, env=env).stdout)
    assert status["vector_store"] == uri and status["index"] == "milvus FLAT" and status["live"] == 12
    hits = json.loads(cli("search", "a red square", "-k", "5", "--json", data_dir=data).stdout)
    assert len(hits) == 5 and all(-1 <= h["score"] <= 1 for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    gone = hits[0]["id"]
    cli("remove", "--id", str(gone), data_dir=data)
    tools = connect(data)  # another client of the same service sees the removal at once
    again = tools.search_by_text(query="a red square", k=12).hits
    assert len(again) == 11 and gone not in {h.id for h in again}
    pngs = tools.search_by_text(query="a red square", k=12, where={"formats": ["png"]}).hits
    assert pngs and all(h.format == "PNG" for h in pngs) and len(pngs) < 11
    with pytest.raises(VectorStoreError, match="one process only"):  # Lite: one process per file
        Engine.open(Settings(data_dir=tmp_path / "other", model="stub", vector_store=uri), encoder=StubEncoder(32))
