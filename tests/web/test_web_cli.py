"""``img-agent web`` as a subprocess: it prints the URL with the token; a busy port names --port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    return subprocess.run([sys.executable, "-m", "img_agent", "--data-dir", str(data_dir), "--model", "tiny-test",
                           *args], capture_output=True, text=True, env=env, timeout=240)


def test_web_prints_the_url_and_a_busy_port_names_the_flag(tmp_path: Path) -> None:
    data = tmp_path / "store"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        refused = run("web", "--port", str(port), data_dir=data)
        assert refused.returncode == 1 and f"Port {port}" in refused.stderr and "--port" in refused.stderr
    started = run("web", "--port", "0", data_dir=data)
    assert started.returncode == 0, started.stderr
    line = started.stdout.splitlines()[0]
    assert line.startswith("img-agent web: http://127.0.0.1:") and "/?token=" in line
    url = line.split(": ", 1)[1]
    again = json.loads(run("--json", "web", "--port", "0", data_dir=data).stdout)
    assert again["url"] == url and again["token"] == url.split("token=")[1]  # one token per service
    with httpx.Client(follow_redirects=False) as http:
        assert http.get(url).status_code == 303
        assert http.get(url.split("?")[0] + "api/status", headers={"Authorization": f"Bearer {again['token']}"}).json()[
            "index"]["live"] == 0
