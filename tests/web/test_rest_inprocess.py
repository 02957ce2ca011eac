"""The REST API built in-process (``build_api``) over a real engine, for states a served store reaches
only by timing: the model still loading, an unexpected failure inside a handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
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

TOKEN = "t" * 43


@pytest.fixture
def store(settings: Settings, image_dir: Path) -> Settings:
    """``settings`` whose store holds ``image_dir``'s 12 images (its engine closed again)."""
    with Engine.open(settings) as engine:
        engine.add_paths([image_dir])
    return settings.model_copy(update={"image_roots": [image_dir.resolve()]})


def client_over(engine: Engine, state: str, tmp_path: Path) -> TestClient:
    """An API client of the app built over ``engine``; an unexpected error answers, it is not raised."""
    tools = ImageTools(engine)
    deps = WebDeps(tools=lambda: tools, model=lambda: ModelInfo(name=engine.model, state=state), llm_model=None,
                   thumbs=ThumbnailCache(tmp_path / "thumbs"), token=TOKEN)
    return TestClient(build_api(deps), raise_server_exceptions=False)


@pytest.fixture
def loading_engine(store: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, threading.Event]]:
    """An engine whose model load (begun by ``warm_up`` in a thread) waits until the event is set."""
    from img_agent.embed import encoder as encoder_module

    real, entered, release = encoder_module.get_encoder, threading.Event(), threading.Event()

    def gated(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder_module, "get_encoder", gated)
    engine = Engine.open(store, model_wait=0.05)
    loader = threading.Thread(target=engine.warm_up, daemon=True)
    loader.start()
    assert entered.wait(30), "the model load did not start"
    try:
        yield engine, release
    finally:
        release.set()
        loader.join(60)
        engine.close()


def test_a_search_while_the_model_loads_is_503_with_retry_after(loading_engine, tmp_path: Path) -> None:
    engine, release = loading_engine
    with client_over(engine, "loading", tmp_path) as api:
        loading = api.post("/api/search", json={"query": "a red square", "k": 3})
        assert loading.status_code == 503, loading.text
        assert loading.headers["retry-after"] == "5"
        error = loading.json()["error"]
        assert error["type"] == "ModelLoadingError"
        assert "call again" in error["message"]
        release.set()
        engine.warm_up()  # the load under way ends
        loaded = api.post("/api/search", json={"query": "a red square", "k": 3})
        assert loaded.status_code == 200, loaded.text
        assert len(loaded.json()["hits"]) == 3


def test_an_unexpected_error_is_500_without_traceback_and_points_to_the_log(
        store: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "internal detail /srv/secret/path"

    def broken_status() -> None:
        raise RuntimeError(secret)

    with Engine.open(store) as engine:
        monkeypatch.setattr(engine, "status", broken_status)
        with caplog.at_level(logging.ERROR, logger="img_agent.web.app"), \
                client_over(engine, "ready", tmp_path) as api:
            failed = api.get("/api/index/status")
    assert failed.status_code == 500, failed.text
    assert failed.json() == {"error": {"type": "ImgAgentError", "message": "unexpected internal error "
                                       "(RuntimeError); see the service log."}}
    assert "Traceback" not in failed.text and secret not in failed.text
    assert secret in caplog.text  # the service log has what the answer leaves out
