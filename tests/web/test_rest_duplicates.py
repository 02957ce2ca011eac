"""``/api/duplicates`` over the in-process API: the tool's result and its validation, GET and POST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox
from img_agent.web.app import build_api
from img_agent.web.deps import WebDeps
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache


def test_duplicates_endpoint_answers_with_the_tools_groups(tmp_path: Path, rng: np.random.Generator) -> None:
    base = rng.standard_normal((4, 16))
    vectors = np.concatenate([base, base[:2] + 0.001 * rng.standard_normal((2, 16))]).astype(np.float32)
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    names = [str(root / ("a" if i % 2 else "b") / f"{i}.jpg") for i in range(len(vectors))]
    with Engine.open(Settings(data_dir=tmp_path / "data", model="stub"), encoder=StubEncoder(16)) as engine:
        ids = engine.add_vectors(vectors, names)
        tools = ImageTools(engine, Sandbox([root], max_file_bytes=engine.settings.max_file_bytes))
        deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state="ready"),
                       llm_model=None, thumbs=ThumbnailCache(tmp_path / "thumbs"), token="t" * 43)
        api = TestClient(build_api(deps), raise_server_exceptions=False)

        got = api.get("/api/duplicates")
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["total_groups"] == 2 and body["threshold"] == 0.95
        assert {frozenset(im["id"] for im in g["images"]) for g in body["groups"]} == {
            frozenset({ids[0], ids[4]}), frozenset({ids[1], ids[5]})}

        posted = api.post("/api/duplicates", json={"threshold": 0.99, "max_groups": 1})
        assert posted.status_code == 200 and len(posted.json()["groups"]) == 1 and posted.json()["truncated"]
        assert api.post("/api/duplicates").json()["total_groups"] == 2
        under = api.get("/api/duplicates", params={"folder": "a"}).json()  # relative to the allowed folder
        assert under["compared"] == 3 and [g["extras"] for g in under["groups"]] == [[ids[5]]]

        bad = api.get("/api/duplicates", params={"threshold": "0"})
        assert bad.status_code == 400 and "threshold" in bad.json()["error"]["message"]
        assert api.post("/api/duplicates", json={"threshold": 2}).status_code == 400
        assert api.post("/api/duplicates", json={"bogus": 1}).status_code == 400
        outside = api.post("/api/duplicates", json={"folder": str(tmp_path)})
        assert outside.status_code == 403 and outside.json()["error"]["type"] == "AccessDeniedError"
        assert "/api/duplicates" in api.get("/api/openapi.json").json()["paths"]
