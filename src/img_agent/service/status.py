"""What ``img-agent service status`` reports (importable without the engine)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from img_agent.results import JobInfo


class ModelState(BaseModel):
    name: str = Field(description="open_clip model of the store.")
    pretrained: str = Field(description="Its weights.")
    state: Literal["loading", "ready", "failed"] = Field(description="Whether searches can encode queries yet.")
    seconds: float | None = Field(None, description="How long loading took (or has taken so far).")
    error: str | None = Field(None, description="Why loading failed.")


class ServiceStatus(BaseModel):
    """The resident service of one store."""

    pid: int
    version: str
    data_dir: str
    socket: str
    log: str
    started: float = Field(description="Unix time the service started.")
    uptime_s: float
    clients: list[str] = Field(description="Clients with a request open now (a stdio bridge keeps one open).")
    open_requests: int
    idle_for_s: float = Field(description="Seconds since the last request ended (0 while one is open).")
    idle_timeout_s: float = Field(description="The service stops after this long without requests or jobs.")
    memory_rss_bytes: int
    model: ModelState
    jobs: list[JobInfo]
    watching: list[str] = Field(
        default_factory=list, description="Folders the service keeps in step with the index (IMG_AGENT_WATCH_FOLDERS)."
    )
