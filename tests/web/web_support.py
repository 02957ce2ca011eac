"""A real service of a real store with its HTTP listener on a free loopback port (for the web tests)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from img_agent.testing import make_images

WEB_IMAGES = 12


@dataclass(frozen=True)
class WebServer:
    """A running service with its web listener on."""

    base_url: str
    token: str
    url: str
    data_dir: Path
    image_dir: Path
    pid: int

    @property
    def bearer(self) -> dict[str, str]:
        """Headers that authenticate an API client."""
        return {"Authorization": f"Bearer {self.token}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "IMG_AGENT_SERVICE_IDLE_TIMEOUT": "300", "XDG_RUNTIME_DIR": str(run_dir),
                "IMG_AGENT_CONFIG": str(run_dir / "no-user-config.env")})
    return env


@contextlib.contextmanager
def start_web_server(base: Path, *, images: int = WEB_IMAGES, seed: int = 0,
                     env: dict[str, str] | None = None) -> Iterator[WebServer]:
    """A store under ``base`` with ``images`` generated images indexed, served with the web listener on;
    ``env`` adds variables to the service's environment (e.g. its LLM)."""
    from img_agent.service.client import ServiceClient

    data_dir, image_dir, run_dir = base / "data", base / "images", base / "run"
    run_dir.mkdir(mode=0o700, parents=True)
    make_images(image_dir, images, seed=seed)
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("IMG_AGENT_", "LLM_")):
                patch.delenv(key)
        for key, value in {**service_env(run_dir), **(env or {})}.items():
            patch.setenv(key, value)
        client = ServiceClient(data_dir, launch_args=["--model", "tiny-test"], client="web-test", roots=["/"])
        try:
            health = client.ensure()
            report = client.call_tool("add_images", {"paths": [str(image_dir)], "wait": True})
            assert len(report["added"]) == images, report
            web = client.request("POST", "/api/service/web", {"host": "127.0.0.1", "port": free_port()})
            yield WebServer(base_url=f"http://127.0.0.1:{web['port']}", token=web["token"], url=web["url"],
                            data_dir=data_dir.resolve(), image_dir=image_dir.resolve(), pid=health.pid)
        finally:
            client.stop()
