"""The service's own folder watch (``service start --watch``), through real processes and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from img_agent.service.client import ServiceClient, wait_for_exit
from img_agent.service.paths import ServicePaths
from img_agent.testing import make_images

pytestmark = pytest.mark.slow

CHANGE_DEADLINE_S = 30.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "IMG_AGENT_SERVICE_IDLE_TIMEOUT": "120"})
    env.update(extra)
    return env


def cli(*args: str, data_dir: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "img_agent", "--data-dir", str(data_dir), *args], check=False,
                          capture_output=True, text=True, env=_env(**(env or {})), timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def service_pids(data_dir: Path) -> list[int]:
    """Processes serving ``data_dir`` (by their command line)."""
    out = subprocess.run(["ps", "-ewwo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    marker = f"--data-dir {data_dir} "
    return [int(line.split()[0]) for line in out.splitlines()
            if "service start --foreground" in line and marker in line + " "]


def _live_until(client: ServiceClient, done: Callable[[int], bool]) -> int:
    """The store's live count, polled through the running service until ``done`` accepts it."""
    deadline = time.monotonic() + CHANGE_DEADLINE_S
    live = -1
    while time.monotonic() < deadline:
        live = client.call_tool("index_status", {})["live"]
        if done(live):
            return live
        time.sleep(0.2)
    raise AssertionError(f"live count still {live} after {CHANGE_DEADLINE_S} s; log: {client._log_tail(20)}")


def test_the_service_keeps_a_watched_folder_in_step(tmp_path: Path) -> None:
    data = tmp_path / "store"
    folder = tmp_path / "watched"
    folder.mkdir()
    first, second = make_images(tmp_path / "made", 2)
    shutil.copy(first, folder / "before.jpg")  # there before the service: found by the catch-up
    started = json.loads(cli("--model", "tiny-test", "service", "start", "--watch", str(folder),
                             "--watch-debounce", "0.3", "--json", data_dir=data).stdout)
    watched = str(folder.resolve())
    assert started["watching"] == [watched]
    pid = started["pid"]
    client = ServiceClient(data, launch_args=["--model", "tiny-test"])
    assert _live_until(client, lambda n: n >= 1) == 1

    shutil.copy(second, folder / "after.jpg")
    assert _live_until(client, lambda n: n != 1) == 2
    (folder / "after.jpg").unlink()
    assert _live_until(client, lambda n: n != 2) == 1

    status = json.loads(cli("service", "status", "--json", data_dir=data).stdout)
    assert status["watching"] == [watched] and status["pid"] == pid
    assert "watching" in cli("service", "status", data_dir=data).stdout
    log = ServicePaths.of(data).log.read_text()
    assert "watch caught up: added 1" in log and "watch: 1 changed path(s): added 1" in log
    # a running service is not silently kept when asked to watch something else
    other = tmp_path / "other"
    other.mkdir()
    refused = cli("service", "start", "--watch", str(other), data_dir=data, check=False)
    assert refused.returncode != 0 and "already runs" in refused.stderr and "service stop" in refused.stderr

    stopped = json.loads(cli("service", "stop", "--json", data_dir=data).stdout)
    assert stopped["stopped"] and stopped["pid"] == pid
    assert wait_for_exit(pid, 15.0)
    assert service_pids(data) == []


def test_a_missing_folder_is_refused_on_the_command_line_and_logged_by_the_service(tmp_path: Path) -> None:
    data = tmp_path / "store"
    missing = tmp_path / "unplugged"
    refused = cli("--model", "tiny-test", "service", "start", "--watch", str(missing), data_dir=data, check=False)
    assert refused.returncode != 0 and "no such folder" in refused.stderr
    assert service_pids(data) == []
    # from the settings (any command may start the service) the folder is left out and the service serves
    started = json.loads(cli("--model", "tiny-test", "service", "start", "--json", data_dir=data,
                             env={"IMG_AGENT_WATCH_FOLDERS": json.dumps([str(missing)])}).stdout)
    assert started["watching"] == []
    assert f"not watching {missing.resolve()}" in ServicePaths.of(data).log.read_text()
    assert json.loads(cli("status", "--json", data_dir=data).stdout)["live"] == 0
    cli("service", "stop", data_dir=data)
    assert wait_for_exit(started["pid"], 15.0)
