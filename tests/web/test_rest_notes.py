"""The note endpoints, in-process over a real engine: tags, descriptions, LLM descriptions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from img_agent.index.engine import Engine
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox
from img_agent.web.app import build_api
from img_agent.web.deps import WebDeps
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache


@pytest.fixture
def api(settings, image_dir: Path, llm, tmp_path: Path) -> Iterator[tuple[TestClient, Engine]]:
    with Engine.open(settings) as engine:
        engine.add_paths([image_dir])
        tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=settings.max_file_bytes), llm=llm)
        deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state="ready"),
                       llm_model="fake-model", thumbs=ThumbnailCache(tmp_path / "thumbs"), token="t" * 43)
        with TestClient(build_api(deps)) as client:
            yield client, engine


def test_tags_and_descriptions_round_trip(api, image_dir: Path) -> None:
    client, engine = api
    ids = engine.notes.ids_for_paths([image_dir])[0]
    tagged = client.post("/api/images/tags", json={"paths": [str(image_dir / "sub")], "add": ["Forest"]})
    assert tagged.status_code == 200, tagged.text
    sub = tagged.json()["changed"]
    assert sub == engine.notes.ids_for_paths([image_dir / "sub"])[0]
    client.post("/api/images/tags", json={"ids": ids[:2], "add": ["forest", "lake"]})
    listed = client.get("/api/tags").json()
    assert listed["tags"][0] == {"tag": "Forest", "count": len(set(sub) | set(ids[:2]))}
    assert {"tag": "lake", "count": 2} in listed["tags"]
    assert client.get("/api/tags", params={"limit": 1}).json()["tags"] == listed["tags"][:1]

    described = client.post("/api/images/description", json={"ids": ids[:1], "description": "Green trees."})
    assert described.json() == {"changed": ids[:1], "unchanged": [], "not_found": []}
    assert client.get(f"/api/images/{ids[0]}").json()["description"] == "Green trees."
    cleared = client.post("/api/images/description", json={"ids": ids[:1], "clear": True})
    assert cleared.json()["changed"] == ids[:1] and engine.get(ids[:1])[0].description is None


def test_errors_keep_their_status(api, image_dir: Path) -> None:
    client, engine = api
    [first, *_] = engine.notes.ids_for_paths([image_dir])[0]
    engine.remove(ids=[first])
    gone = client.post("/api/images/tags", json={"ids": [first], "add": ["x"]})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "NotFoundError"
    bad = client.post("/api/images/tags", json={"ids": [first + 1], "add": ["x" * 65]})
    assert bad.status_code == 400 and "64" in bad.json()["error"]["message"]
    outside = client.post("/api/images/tags", json={"paths": ["/etc"], "add": ["x"]})
    assert outside.status_code == 403


def test_describe_endpoint(api, fake_llm) -> None:
    client, engine = api
    fake_llm.reply("Blue squares.")
    fake_llm.reply("Red stripes.")
    done = client.post("/api/images/describe", json={"limit": 2})
    assert done.status_code == 200, done.text
    report = done.json()
    assert len(report["described"]) == 2 and report["remaining"] == 10 and report["job"] is None
    assert [r.description for r in engine.get(report["described"])] == ["Blue squares.", "Red stripes."]
    fake_llm.reply("Green.")
    started = client.post("/api/images/describe", json={"limit": 1, "wait": False}).json()
    job = started["job"]
    assert job["kind"] == "describe"
    deadline = time.monotonic() + 30
    info = client.get(f"/api/jobs/{job['id']}").json()
    while info["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        info = client.get(f"/api/jobs/{job['id']}").json()
    assert info["state"] == "done" and len(info["result"]["described"]) == 1
    assert info["result"]["remaining"] == 9 and len(engine.notes.to_describe()) == 9
