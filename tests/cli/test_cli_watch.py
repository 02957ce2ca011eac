"""``img-agent watch`` as a subprocess: catch-up, changes applied in batches, a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from img_agent.index.exclusions import EXCLUDED_REASON
from img_agent.service.client import is_alive
from img_agent.testing import make_images

START_DEADLINE_S = 120.0
CHANGE_DEADLINE_S = 30.0


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"IMG_AGENT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "img_agent", *args], capture_output=True, text=True,
                          env=_env(data_dir), timeout=180, check=False)
    assert proc.returncode == 0, f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


class Watcher:
    """A running ``img-agent watch``; its stdout lines arrive in :attr:`lines`."""

    def __init__(self, *args: str, data_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "img_agent", "--model", "tiny-test", "watch", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(data_dir))
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, accept, deadline_s: float) -> str:
        """The first new line ``accept`` takes; fails with everything seen once ``deadline_s`` passed."""
        deadline = time.monotonic() + deadline_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and self.lines.empty():
                self.proc.kill()
                raise AssertionError(f"no expected line within {deadline_s} s; saw {self.seen}; "
                                     f"stderr: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.seen.append(line)
            if accept(line):
                return line

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return code, self.proc.stderr.read() if self.proc.stderr else ""


def _totals(watcher: Watcher, until, deadline_s: float = CHANGE_DEADLINE_S) -> dict:
    """Sums of the JSON change reports read until ``until(totals)`` holds."""
    totals: dict = {"added_paths": [], "removed": 0, "skipped": []}

    def take(line: str) -> bool:
        report = json.loads(line)["report"]
        totals["added_paths"] += report["added_paths"]
        totals["removed"] += len(report["removed_missing"])
        totals["skipped"] += report["skipped"]
        return until(totals)

    watcher.wait_for(take, deadline_s)
    return totals


def test_watch_through_the_service_adds_removes_and_stops_on_sigint(tmp_path):
    data, folder = tmp_path / "store", tmp_path / "photos"
    first = make_images(folder, 3, seed=1)
    stock = make_images(tmp_path / "stock", 3, seed=2)
    folder = folder.resolve()

    watcher = Watcher(str(folder), "--debounce", "0.3", "--json", data_dir=data)
    catch_up = json.loads(watcher.wait_for(lambda line: '"catch-up"' in line, START_DEADLINE_S))
    assert sorted(catch_up["report"]["added_paths"]) == sorted(str(p.resolve()) for p in first)

    new = [folder / "new1.jpg", folder / "sub" / "new2.png"]
    (folder / "sub").mkdir(exist_ok=True)
    shutil.copyfile(stock[0], new[0])
    shutil.copyfile(stock[1], new[1])
    (folder / "notes.txt").write_text("ignored")
    totals = _totals(watcher, lambda t: len(t["added_paths"]) >= 2)
    assert sorted(totals["added_paths"]) == sorted(str(p) for p in new) and totals["skipped"] == []

    first[0].unlink()
    totals = _totals(watcher, lambda t: t["removed"] >= 1)
    assert totals["removed"] == 1 and totals["added_paths"] == []

    # another command meanwhile: the service answers it; a file removed on request stays out of the watch
    run("remove", "--path", str(new[0]), data_dir=data)
    shutil.copyfile(stock[2], new[0])
    totals = _totals(watcher, lambda t: bool(t["skipped"]))
    assert totals["skipped"] == [{"path": str(new[0]), "reason": EXCLUDED_REASON}]

    status = json.loads(run("status", "--json", data_dir=data).stdout)
    assert status["live"] == 3 + 2 - 1 - 1

    code, stderr = watcher.stop(signal.SIGINT)
    assert code == 0, stderr
    assert not is_alive(watcher.proc.pid)


def test_watch_in_process_prints_a_line_per_batch_and_stops_on_sigterm(tmp_path):
    data, folder = tmp_path / "store", tmp_path / "photos"
    folder.mkdir()
    stock = make_images(tmp_path / "stock", 2, seed=3)
    folder = folder.resolve()

    watcher = Watcher(str(folder), "--debounce", "0.3", "--no-service", data_dir=data)
    watcher.wait_for(lambda line: line.startswith("watching "), START_DEADLINE_S)
    assert any("caught up: added 0, removed 0, skipped 0" in line for line in watcher.seen)

    target = folder / "pic.jpg"
    with open(target, "wb") as f:  # written in pieces: still one update
        data_bytes = stock[0].read_bytes()
        for start in range(0, len(data_bytes), 4096):
            f.write(data_bytes[start:start + 4096])
            f.flush()
    line = watcher.wait_for(lambda text: "added" in text and "caught up" not in text, CHANGE_DEADLINE_S)
    assert line.endswith("added 1, removed 0, skipped 0")

    target.rename(folder / "renamed.jpg")
    line = watcher.wait_for(lambda text: "removed 1" in text, CHANGE_DEADLINE_S)
    assert line.endswith("added 1, removed 1, skipped 0")

    code, stderr = watcher.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "stopped watching" in stderr
    status = json.loads(run("--no-service", "status", "--json", data_dir=data).stdout)
    assert status["live"] == 1
