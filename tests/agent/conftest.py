"""Fixtures of the agent tests: a scripted OpenAI-compatible server, clients bound to it, a fake engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_llm import FakeLLMServer

from img_agent.agent import llm as llm_module
from img_agent.agent.llm import LLMClient
from img_agent.config import LLMSettings


@pytest.fixture(autouse=True)
def _fast_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
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


@pytest.fixture
def fake_engine() -> FakeEngine:
    """An engine double whose every query returns images 1..8 with falling scores."""
    return FakeEngine()
