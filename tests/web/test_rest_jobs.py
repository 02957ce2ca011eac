"""Jobs over the REST API: adding a folder streams progress (server-sent events) and can be cancelled."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from img_agent.testing import make_images

if TYPE_CHECKING:
    from web_support import WebServer

pytestmark = pytest.mark.slow


def events(http: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """Every event of a job's stream, until it ends."""
    out: list[tuple[str, dict]] = []
    with http.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[len("data: "):])))
    return out


def test_adding_a_folder_streams_progress_then_done(web_server_fresh: WebServer) -> None:
    server = web_server_fresh
    make_images(server.image_dir / "more", 40, seed=7, size=(48, 40))
    with httpx.Client(base_url=server.base_url, headers=server.bearer, timeout=120) as http:
        job = http.post("/api/index/add", json={"paths": [str(server.image_dir / "more")]}).json()["job"]
        assert job["state"] == "running" and job["id"].startswith("add-")
        seen = events(http, job["id"])
        kinds = [kind for kind, _ in seen]
        assert kinds[-1] == "done" and set(kinds[:-1]) <= {"progress"}, kinds
        final = seen[-1][1]
        assert final["state"] == "done" and len(final["result"]["added"]) == 40
        assert http.get(f"/api/jobs/{job['id']}").json()["state"] == "done"
        assert job["id"] in [j["id"] for j in http.get("/api/jobs").json()]
        assert http.get("/api/index/status").json()["live"] == 52
        again = events(http, job["id"])  # a finished job's stream is its final state
        assert [kind for kind, _ in again] == ["done"]


def test_a_job_can_be_cancelled(web_server_fresh: WebServer) -> None:
    server = web_server_fresh
    make_images(server.image_dir / "many", 400, seed=3, size=(48, 40))
    with httpx.Client(base_url=server.base_url, headers=server.bearer, timeout=120) as http:
        job = http.post("/api/index/add", json={"paths": [str(server.image_dir / "many")]}).json()["job"]
        cancelled = http.post(f"/api/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["id"] == job["id"]
        final = events(http, job["id"])[-1][1]
        assert final["state"] == "cancelled", final
        assert len(final["result"]["added"]) < 400 and final["result"]["cancelled"]
        live = http.get("/api/index/status").json()["live"]
        assert live == 12 + len(final["result"]["added"])  # what it added before stopping stays


def test_rebuild_runs_as_a_job_streamed_to_done(web_server_fresh: WebServer) -> None:
    server = web_server_fresh
    with httpx.Client(base_url=server.base_url, headers=server.bearer, timeout=120) as http:
        job = http.post("/api/index/rebuild", json={}).json()["job"]
        assert job["kind"] == "rebuild"
        final = events(http, job["id"])[-1][1]
        assert final["state"] == "done" and final["result"]["operation"] == "rebuild", final
        assert http.get("/api/index/status").json()["live"] == 12
