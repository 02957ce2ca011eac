"""The REST search endpoints take the search filter as ``where`` (the same SearchFilter model as the tools)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.tools.image_tools import ImageTools
from img_agent.web.app import build_api
from img_agent.web.deps import WebDeps
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache


@pytest.fixture
def api(settings: Settings, image_dir: Path, tmp_path: Path):
    settings = settings.model_copy(update={"image_roots": [image_dir.resolve()]})
    with Engine.open(settings) as engine:
        engine.add_paths([image_dir])
        tools = ImageTools(engine)
        deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state="ready"),
                       llm_model=None, thumbs=ThumbnailCache(tmp_path / "thumbs"), token="t" * 43)
        with TestClient(build_api(deps), raise_server_exceptions=False) as client:
            yield client


def paths(response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return sorted(h["path"] for h in body.get("hits", body.get("results", [])))


def test_search_endpoints_take_where(api: TestClient, image_dir: Path) -> None:
    root = image_dir.resolve()
    sub_pngs = sorted(str(p) for p in (root / "sub").iterdir() if p.suffix.lower() == ".png")
    pngs = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() == ".png")
    assert 0 < len(sub_pngs) < len(pngs) < 12
    relative = {"folder": "sub", "formats": ["png"]}
    assert paths(api.post("/api/search", json={"query": "a picture", "k": 20, "where": relative})) == sub_pngs
    absolute = {"folder": str(root / "sub"), "formats": ["PNG"], "glob": None}
    assert paths(api.post("/api/search", json={"query": "a picture", "k": 20, "expand": True,
                                               "where": absolute})) == sub_pngs
    assert paths(api.post("/api/search/rag", json={"query": "a picture", "k": 20, "where": relative})) == sub_pngs
    data = Path(pngs[0]).read_bytes()
    encoded = base64.b64encode(data).decode()
    assert paths(api.post("/api/search/image", json={"image_base64": encoded, "k": 20,
                                                     "where": {"glob": "*.PNG"}})) == pngs
    form = {"k": "20", "where": json.dumps({"folder": "sub", "glob": "*.png"})}
    upload = api.post("/api/search/image", files={"image": ("q.png", data, "image/png")}, data=form)
    assert paths(upload) == sub_pngs


def test_bad_where_is_a_400_saying_what_to_do(api: TestClient) -> None:
    bad = api.post("/api/search", json={"query": "a picture", "where": {"taken_after": "last week"}})
    assert bad.status_code == 400, bad.text
    assert "taken_after must be an ISO 8601 date" in bad.json()["error"]["message"]
    outside = api.post("/api/search", json={"query": "a picture", "where": {"folder": "/etc"}})
    assert outside.status_code == 403 and "outside the allowed folders" in outside.json()["error"]["message"]
    box = api.post("/api/search", json={"query": "a picture", "where": {"bbox": [0, 0, 100, 10]}})
    assert box.status_code == 400 and "latitudes from -90 to 90" in box.json()["error"]["message"]
