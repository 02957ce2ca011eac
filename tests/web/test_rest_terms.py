"""POST /api/search/combined, in-process over a real engine: the tool's result, the tool's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox
from img_agent.web.app import build_api
from img_agent.web.deps import WebDeps
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache


def test_combined_search_over_rest(settings: Settings, image_dir: Path, tmp_path: Path):
    with Engine.open(settings) as engine:
        engine.add_paths([image_dir])
        tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=engine.settings.max_file_bytes))
        deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state="ready"),
                       llm_model=None, thumbs=ThumbnailCache(tmp_path / "thumbs"), token="t" * 43)
        client = TestClient(build_api(deps))
        answer = client.post("/api/search/combined", json={
            "terms": [{"text": "a red car", "weight": 1.5}, {"image_id": 2}, {"text": "night", "weight": -1}],
            "k": 5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["query"] == '1.5×"a red car" + image id 2 − "night"'

        t = engine.encode_text(["a red car", "night"]).astype(np.float64)
        x = engine.store.get(np.arange(12)).astype(np.float64)
        q = 1.5 * t[0] / np.linalg.norm(t[0]) + x[2] / np.linalg.norm(x[2]) - t[1] / np.linalg.norm(t[1])
        want = [int(i) for i in np.argsort(-(x @ q), kind="stable") if i != 2][:5]
        assert [h["id"] for h in body["hits"]] == want

        bad = client.post("/api/search/combined", json={"terms": [{"text": "a", "image_id": 1}]})
        assert bad.status_code == 400 and "exactly one of text, path, image_base64 or image_id" in bad.text
        outside = client.post("/api/search/combined", json={"terms": [{"path": str(tmp_path / "x.jpg")}]})
        assert outside.status_code in (403, 404) and "Term 1" in outside.json()["error"]["message"]
