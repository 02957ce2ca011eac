"""Shared fixtures: hermetic settings, a tiny random-weight CLIP, generated images."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from img_agent.agent import llm as llm_module
from img_agent.agent.llm import LLMClient
from img_agent.config import LLMSettings, Settings
from img_agent.testing import make_images
from img_agent.testing.fake_llm import FakeLLMServer


@pytest.fixture(autouse=True)
def _hermetic_env(tmp_path, monkeypatch):
    """Point every default at tmp_path and drop any user configuration from the environment."""
    for key in list(os.environ):
        if key.startswith(("IMG_AGENT_", "LLM_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IMG_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMG_AGENT_CONFIG", str(tmp_path / "no-user-config.env"))
    monkeypatch.setenv("IMG_AGENT_SERVICE_IDLE_TIMEOUT", "120")  # a service a test leaves behind ends soon
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IMG_AGENT_INFERENCE", "torch")  # no ONNX export per test process (tests/embed/test_onnx_visual.py covers it)
    monkeypatch.chdir(tmp_path)  # no stray .env is read


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for the tiny offline model, data in tmp_path."""
    return Settings(data_dir=tmp_path / "data", model="tiny-test", workers=2, batch_size=8)


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """A folder of 12 generated, visually distinct images (JPEG and PNG, some in a subfolder)."""
    folder = tmp_path / "images"
    make_images(folder, 12)
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fast_llm_retries_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep retry pauses tiny so failure tests stay fast; never route 127.0.0.1 through a proxy."""
    monkeypatch.setattr(llm_module, "INITIAL_RETRY_WAIT", 0.01)
    monkeypatch.setattr(llm_module, "MAX_RETRY_WAIT", 0.05)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started scripted LLM server on 127.0.0.1 (closed after the test)."""
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_llm(fake_llm: FakeLLMServer) -> Callable[..., LLMClient]:
    """``make_llm(**overrides)`` -> a real client bound to the fake server (short timeout, 1 retry)."""

    def build(**overrides: Any) -> LLMClient:
        values: dict[str, Any] = {
            "base_url": fake_llm.url,
            "api_key": "test-key",
            "model": "fake-model",
            "timeout": 2.0,
            "max_retries": 1,
        }
        values.update(overrides)
        client = LLMClient.from_settings(LLMSettings(**values))
        assert client is not None
        return client

    return build


@pytest.fixture
def llm(make_llm: Callable[..., LLMClient]) -> LLMClient:
    """A client bound to the fake server."""
    return make_llm()


@pytest.fixture(autouse=True)
def _own_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's services get their own socket folder, and are stopped when the test ends."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    yield
    stop_services_under(run)


def stop_services_under(run: Path) -> None:
    """Stop every service listening in ``run`` (a test's own socket folder)."""
    from img_agent.service.client import wait_for_exit
    from img_agent.service.transport import request_json

    for sock in run.rglob("*.sock"):
        pid = None
        with contextlib.suppress(Exception):
            _, health = request_json(sock, "GET", "/api/health", timeout=5)
            pid = int(health["pid"])
            request_json(sock, "POST", "/api/service/stop", {}, timeout=5)
        if pid is not None and not wait_for_exit(pid, 15.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
