"""collapse_duplicates through the search tools, REST and the CLI: k different pictures, checked
against the greedy folding oracle over crafted vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

from img_agent.results import DEFAULT_DUPLICATE_THRESHOLD
from img_agent.tools import dispatch
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox
from img_agent.web.app import build_api
from img_agent.web.deps import WebDeps
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache
from tests.index.test_duplicates import collapse_oracle, crafted, open_engine, paths


def test_search_tools_and_rest_collapse_near_duplicates(tmp_path: Path, rng) -> None:
    vectors = crafted(rng, [8, 6, 4], 12, noise=0.02)
    t = DEFAULT_DUPLICATE_THRESHOLD
    live = np.ones(len(vectors), dtype=bool)
    with open_engine(tmp_path) as engine:
        ids = engine.add_vectors(vectors, paths(len(vectors)))
        tools = ImageTools(engine, Sandbox([tmp_path], max_file_bytes=engine.settings.max_file_bytes))
        for query_id in ids[:3]:
            want = collapse_oracle(vectors, live, vectors[query_id], 6, t, query_id)
            got = json.loads(dispatch(tools, "search_by_image", json.dumps(
                {"image_id": query_id, "k": 6, "collapse_duplicates": True})))
            assert [(h["id"], h["duplicates"]) for h in got["hits"]] == want
            plain = json.loads(dispatch(tools, "search_by_image", json.dumps({"image_id": query_id, "k": 6})))
            assert all(h["duplicates"] is None for h in plain["hits"])
            combined = json.loads(dispatch(tools, "search_combined", json.dumps(
                {"terms": [{"image_id": query_id}], "k": 6, "collapse_duplicates": True})))
            assert [(h["id"], h["duplicates"]) for h in combined["hits"]] == want  # one term = more like this

        deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state="ready"),
                       llm_model=None, thumbs=ThumbnailCache(tmp_path / "thumbs"), token="t" * 43)
        client = TestClient(build_api(deps))
        q = vectors[ids[0]]
        answer = client.post("/api/tools/call", json={"name": "search_combined", "arguments": {
            "terms": [{"image_id": int(ids[0])}], "k": 4, "collapse_duplicates": True}})
        assert answer.status_code == 200, answer.text
        pictures = [(h["id"], h["duplicates"]) for h in answer.json()["hits"]]
        assert pictures == collapse_oracle(vectors, live, q, 4, t, ids[0])
        kept = [i for i, _ in pictures]
        assert all(vectors[a] @ vectors[b] < t for n, a in enumerate(kept) for b in kept[n + 1:])
