"""The resident service through real processes: bridges, the CLI and Python clients on one store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from img_agent.service.client import ServiceClient
from img_agent.service.paths import ServicePaths
from img_agent.service.remote import connect
from img_agent.testing import make_images

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "IMG_AGENT_SERVICE_IDLE_TIMEOUT": "120"})
    env.update(extra)
    return env


def cli(*args: str, data_dir: Path | None, check: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    proc = subprocess.run([sys.executable, "-m", "img_agent", *where, *args],
                          capture_output=True, text=True, env=_env(**(env or {})), timeout=240, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def bridge_params(data_dir: Path, root: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, env=_env(),
                                 args=["-m", "img_agent", "serve", "--model", "tiny-test", "--data-dir", str(data_dir),
                                       "--root", str(root)])


def service_pids(data_dir: Path) -> list[int]:
    """Processes serving ``data_dir`` (by their command line)."""
    out = subprocess.run(["ps", "-ewwo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    marker = f"--data-dir {data_dir} "
    return [int(line.split()[0]) for line in out.splitlines()
            if "service start --foreground" in line and marker in line + " "]


def test_three_bridges_and_the_cli_at_once(tmp_path: Path, image_dir: Path) -> None:
    data = tmp_path / "store"
    cli("--model", "tiny-test", "index", str(image_dir), data_dir=data)
    results: dict[str, list[int]] = {}

    async def one_bridge(name: str) -> None:
        async with stdio_client(bridge_params(data, image_dir)) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            assert "search_by_text" in [t.name for t in listed.tools]
            result = await session.call_tool("search_by_text", {"query": "a red square", "k": 5})
            assert not result.is_error, result.content
            results[name] = [hit["id"] for hit in result.structured_content["hits"]]

    def cli_search() -> None:
        out = cli("search", "a red square", "-k", "5", "--json", data_dir=data)
        results["cli"] = [hit["id"] for hit in json.loads(out.stdout)]

    async def all_at_once() -> None:
        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(one_bridge, f"bridge{i}")
            group.start_soon(anyio.to_thread.run_sync, cli_search)

    anyio.run(all_at_once)
    assert set(results) == {"bridge0", "bridge1", "bridge2", "cli"}
    assert len({tuple(ids) for ids in results.values()}) == 1 and len(results["cli"]) == 5
    assert len(service_pids(data)) == 1


def test_ten_clients_racing_leave_one_service(tmp_path: Path) -> None:
    data = tmp_path / "store"
    outcomes: list[object] = []

    def start() -> None:
        try:
            outcomes.append(ServiceClient(data, launch_args=["--model", "tiny-test"]).ensure().pid)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            outcomes.append(exc)

    threads = [threading.Thread(target=start) for _ in range(10)]
    procs = [subprocess.Popen([sys.executable, "-m", "img_agent", "--data-dir", str(data), "--model", "tiny-test",
                               "service", "start"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read().decode()
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert len(set(outcomes)) == 1
    assert service_pids(data) == [outcomes[0]]


def test_killed_service_mid_add_loses_no_acknowledged_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "store"
    folder = tmp_path / "many"
    make_images(folder, 120, size=(64, 48))
    monkeypatch.setenv("IMG_AGENT_BATCH_SIZE", "8")
    tools = connect(data, launch_args=["--model", "tiny-test"], roots=[folder])
    job = tools.add_images([str(folder)], wait=False).job
    assert job is not None
    deadline = time.monotonic() + 120
    while tools.job(job.id).done < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    acknowledged = tools.index_status().live
    pid = tools.service_status().pid
    os.kill(pid, signal.SIGKILL)
    # the next call starts a new service and finds every acknowledged image
    after = tools.index_status()
    assert tools.service_status().pid != pid
    assert after.live >= acknowledged > 0
    report = tools.add_images([str(folder)])
    assert report.unchanged >= acknowledged and after.live + len(report.added) == 120
    hits = tools.search_by_text("a picture", k=120).hits
    assert len(hits) == 120


def test_a_service_of_another_version_is_replaced(tmp_path: Path) -> None:
    data = tmp_path / "store"
    old = subprocess.Popen(
        [sys.executable, "-c", "import sys, img_agent.version; img_agent.version.__version__ = '0.0.1'; "
         "from img_agent.cli.main import main; sys.exit(main())",
         "--data-dir", str(data), "--model", "tiny-test", "service", "start", "--foreground"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = ServiceClient(data, launch_args=["--model", "tiny-test"])
    deadline = time.monotonic() + 120
    while (client.health() is None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.health().version == "0.0.1"
    health = client.ensure()
    assert health.compatible and health.pid != old.pid
    assert old.wait(30) == 0  # asked to stop, it stopped cleanly


def test_a_disconnecting_callers_add_finishes_as_a_job(tmp_path: Path) -> None:
    data = tmp_path / "store"
    folder = tmp_path / "many"
    make_images(folder, 60, size=(64, 48))

    async def call_and_hang_up() -> None:
        async with stdio_client(bridge_params(data, folder)) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            with anyio.move_on_after(1.5):
                await session.call_tool("add_images", {"paths": [str(folder)]})

    anyio.run(call_and_hang_up)
    tools = connect(data, roots=[folder])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        jobs = tools.index_status().jobs
        if jobs and jobs[-1].state != "running":
            break
        time.sleep(0.2)
    job = tools.index_status().jobs[-1]
    assert job.kind == "add" and job.state == "done"
    assert len(job.result["added"]) == 60
    assert tools.index_status().live == 60


def test_the_socket_is_closed_to_other_users(tmp_path: Path) -> None:
    data = tmp_path / "store"
    health = ServiceClient(data, launch_args=["--model", "tiny-test"]).ensure()
    paths = ServicePaths.of(data)
    folder_mode = paths.socket.parent.stat().st_mode & 0o777
    assert folder_mode == 0o700 and paths.socket.parent.stat().st_uid == os.getuid()
    assert paths.socket.stat().st_mode & 0o077 == 0
    assert health.pid in service_pids(data)
    # a folder others can enter is closed before use; one of another owner is refused
    paths.socket.parent.chmod(0o755)
    ServiceClient(data).ensure()
    assert paths.socket.parent.stat().st_mode & 0o777 == 0o700


def test_a_dotenv_in_the_clients_folder_is_ignored(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    elsewhere = tmp_path / "dotenv-store"
    (project / ".env").write_text(f"IMG_AGENT_DATA_DIR={elsewhere}\nIMG_AGENT_TOPK=3\n")
    xdg = tmp_path / "xdg"
    out = cli("--model", "tiny-test", "status", "--json", data_dir=None, cwd=project, env={"XDG_DATA_HOME": str(xdg)})
    assert json.loads(out.stdout)["data_dir"] == str(xdg / "img-agent")
    assert not elsewhere.exists()


def test_a_bridge_outlives_its_service(tmp_path: Path, image_dir: Path) -> None:
    data = tmp_path / "store"
    cli("--model", "tiny-test", "index", str(image_dir), data_dir=data)

    async def session() -> None:
        async with stdio_client(bridge_params(data, image_dir)) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            assert (await mcp.call_tool("index_status", {})).structured_content["live"] == 12
            pid = ServiceClient(data).health().pid
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(30):
                while ServiceClient(data).health() is not None:
                    await anyio.sleep(0.05)
            again = await mcp.call_tool("index_status", {})  # a new service, a new session, same client
            assert not again.is_error and again.structured_content["live"] == 12
            assert ServiceClient(data).health().pid != pid

    anyio.run(session)


def test_folders_indexed_from_the_cli_become_the_default_roots_of_later_sessions(tmp_path: Path,
                                                                                image_dir: Path) -> None:
    data = tmp_path / "store"
    cli("--model", "tiny-test", "index", str(image_dir), data_dir=data)  # the person at the keyboard: unconfined
    later = tmp_path / "later"
    make_images(later, 3, seed=9)

    async def session() -> None:
        params = StdioServerParameters(command=sys.executable, env=_env(),
                                       args=["-m", "img_agent", "serve", "--data-dir", str(data)])  # no --root
        async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            inside = await mcp.call_tool("search_by_image", {"path": str(image_dir / "img_0000.jpg"), "k": 2})
            assert not inside.is_error, inside.content
            # a model cannot widen its own roots: a folder outside them is refused, and stays so
            outside = await mcp.call_tool("add_images", {"paths": [str(later)]})
            assert outside.is_error
        cli("index", str(later), data_dir=data)  # the person indexes it: later sessions may use it
        async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            now = await mcp.call_tool("search_by_image", {"path": str(later / "img_0000.jpg"), "k": 2})
            assert not now.is_error, now.content

    anyio.run(session)


def test_each_client_brings_its_own_llm(tmp_path: Path, image_dir: Path, fake_llm) -> None:
    data = tmp_path / "store"
    cli("--model", "tiny-test", "index", str(image_dir), data_dir=data)  # a service with no LLM configured
    fake_llm.reply('["a red image"]')  # the question's search variants
    fake_llm.reply("A red one [1].")

    async def session() -> None:
        params = StdioServerParameters(command=sys.executable, env=_env(LLM_BASE_URL=fake_llm.url, LLM_VISION="no"),
                                       args=["-m", "img_agent", "serve", "--data-dir", str(data)])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()
            answer = await mcp.call_tool("ask_about_images", {"question": "which is red?", "k": 2})
            assert not answer.is_error, answer.content
            assert answer.structured_content["answer"] == "A red one [1]." and answer.structured_content["llm_used"]

    anyio.run(session)
    # a client without an LLM still gets none
    out = cli("ask", "which is red?", "--no-expand", "-k", "2", "--json", data_dir=data)
    assert json.loads(out.stdout)["llm_used"] is False
