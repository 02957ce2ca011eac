"""REST error paths that need a scripted LLM or a read-only store: real HTTP to a real service."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from web_support import free_port, service_env, start_web_server

from img_agent.testing.fake_llm import FakeLLMServer
from img_agent.testing.mounts import remount_read_only, tmpfs

pytestmark = pytest.mark.slow


def test_web_chat_never_runs_a_removal(tmp_path: Path) -> None:
    """A chat model told (by text in the collection) to remove images gets a refusal; nothing is removed."""
    llm = FakeLLMServer().start()
    env = {"LLM_BASE_URL": llm.url, "LLM_API_KEY": "k", "LLM_MODEL": "fake-model", "LLM_MAX_RETRIES": "0"}
    try:
        with start_web_server(tmp_path / "web", images=4, env=env) as server:
            llm.reply_tool_calls(("remove_images", json.dumps({"ids": [0, 1, 2, 3]})))
            llm.reply("I could not remove them.")
            api = httpx.Client(base_url=server.base_url, headers=server.bearer, timeout=60)
            turn = api.post("/api/chat", json={"messages": [{"role": "user", "content": "clean up"}]})
            assert turn.status_code == 200, turn.text
            body = turn.json()
            assert body["reply"] == "I could not remove them."
            [call] = body["tool_calls"]
            assert call["name"] == "remove_images" and "never made from the web chat" in json.dumps(call)
            assert api.get("/api/index/status").json()["live"] == 4
            not_user = api.post("/api/chat", json={"messages": [{"role": "assistant", "content": "hi"}]})
            assert not_user.status_code == 400 and "user" in not_user.json()["error"]["message"]
    finally:
        llm.close()


def search_when_loaded(api: httpx.Client) -> httpx.Response:
    """A text search, retried as a 503 (the model still loading) asks: with its Retry-After and message."""
    deadline = time.monotonic() + 120
    while True:
        found = api.post("/api/search", json={"query": "a red square", "k": 3})
        if found.status_code != 503 or time.monotonic() > deadline:
            assert found.status_code == 200, found.text
            return found
        assert found.headers["retry-after"] == "5" and found.json()["error"]["type"] == "ModelLoadingError"
        assert "call again" in found.json()["error"]["message"]
        time.sleep(0.5)


def test_changes_to_a_read_only_store_are_409(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store on a read-only mount is served: searches answer, every change is a 409 saying what to do."""
    from img_agent.service.client import ServiceClient

    with tmpfs(tmp_path / "ro", "64m") as mnt:
        with start_web_server(mnt / "web", images=3):
            pass  # the store is built and its service stopped
        remount_read_only(mnt)
        run_dir = tmp_path / "service-run"
        run_dir.mkdir(mode=0o700)
        for key in list(os.environ):
            if key.startswith(("IMG_AGENT_", "LLM_")):
                monkeypatch.delenv(key)
        for key, value in service_env(run_dir).items():
            monkeypatch.setenv(key, value)
        client = ServiceClient(mnt / "web" / "data", launch_args=["--model", "tiny-test"], client="web-test", roots=["/"])
        try:
            client.ensure()
            web = client.request("POST", "/api/service/web", {"host": "127.0.0.1", "port": free_port()})
            api = httpx.Client(base_url=f"http://127.0.0.1:{web['port']}",
                               headers={"Authorization": f"Bearer {web['token']}"}, timeout=60)
            status = api.get("/api/status").json()
            assert status["read_only"] is True and status["index"]["live"] == 3
            found = search_when_loaded(api)
            assert found.json()["hits"], found.text
            for response in (api.post("/api/index/merge"), api.delete("/api/images/0"),
                             api.post("/api/index/add", json={"paths": [str(mnt / "web" / "images")]})):
                assert response.status_code == 409, response.text
                error = response.json()["error"]
                assert error["type"] == "StoreReadOnlyError" and "read-only" in error["message"]
            assert api.get("/api/images/0/thumbnail?size=64").status_code == 200  # cached beside the socket
        finally:
            client.stop()
