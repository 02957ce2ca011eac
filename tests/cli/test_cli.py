"""The CLI end to end, as a subprocess, on generated images with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def run(*args: str, data_dir: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    full_env.update({"IMG_AGENT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env or {})})
    proc = subprocess.run([sys.executable, "-m", "img_agent", *args], capture_output=True, text=True,
                          env=full_env, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_end_to_end(tmp_path, image_dir):
    data = tmp_path / "store"
    (image_dir / "broken.jpg").write_text("nope")

    out = run("--model", "tiny-test", "index", str(image_dir), "--json", data_dir=data)
    report = json.loads(out.stdout)["report"]
    assert len(report["added"]) == 12
    assert [s["path"].rsplit("/", 1)[-1] for s in report["skipped"]] == ["broken.jpg"]

    human = run("index", str(image_dir), data_dir=data).stdout  # model adopted from the store
    assert "Added 0, unchanged 12" in human and "skipped" in human and "broken.jpg" in human

    table = run("search", "a sunset over the sea", "-k", "3", data_dir=data).stdout
    lines = table.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "id", "path"] and len(lines) == 4
    golden = (GOLDEN / "search_table.txt").read_text()
    assert table.replace(str(image_dir.resolve()), "<IMAGES>") == golden

    hits = json.loads(run("search", "--image", str(sorted(image_dir.glob("*.png"))[0]), "-k", "2", "--json",
                          data_dir=data).stdout)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[0]["path"].endswith(".png")
    similar = json.loads(run("search", "--similar", str(hits[0]["id"]), "--json", "-k", "4", data_dir=data).stdout)
    assert len(similar) == 4 and hits[0]["id"] not in [h["id"] for h in similar]

    removed = json.loads(run("remove", str(hits[0]["id"]), hits[1]["path"], "--json", data_dir=data).stdout)
    assert sorted(removed["removed"]) == sorted([hits[0]["id"], hits[1]["id"]])
    status = json.loads(run("status", "--json", data_dir=data).stdout)
    assert status["live"] == 10 and status["model"] == "tiny-test"

    merged = json.loads(run("merge", "--json", data_dir=data).stdout)
    assert merged["operation"] == "merge"
    rebuilt = json.loads(run("rebuild", "--json", data_dir=data).stdout)
    # removed while still in the buffer: they never reached the main index, nothing to drop
    assert rebuilt["moved"] == 10 and rebuilt["dropped"] == 0
    st = run("status", data_dir=data).stdout
    assert "images (live)              10" in st and "removed, awaiting rebuild  0" in st


def test_cli_errors_exit_nonzero_with_a_message(tmp_path, image_dir):
    data = tmp_path / "store"
    run("--model", "tiny-test", "index", str(image_dir), data_dir=data)
    bad = run("search", "x", "-k", "0", data_dir=data, check=False)
    # the tool's own validation, the same message every surface gives
    assert bad.returncode == 1 and "'k': Input should be greater than or equal to 1" in bad.stderr and bad.stdout == ""
    bad = run("remove", "424242", data_dir=data, check=False)
    assert bad.returncode == 1 and "No live image matched 424242" in bad.stderr
    bad = run("--model", "ViT-B-32", "status", data_dir=data, check=False)
    assert bad.returncode == 1 and "holds embeddings of tiny-test" in bad.stderr
    # settings belong to the service: a bad one stops the service that this command starts
    run("service", "stop", data_dir=data)
    bad = run("status", data_dir=data, env={"IMG_AGENT_TOPK": "0"}, check=False)
    assert bad.returncode == 1 and "topk" in bad.stderr
    usage = run("search", data_dir=data, check=False)
    assert usage.returncode == 1 and "exactly one of" in usage.stderr
    assert run("bogus", data_dir=data, check=False).returncode == 2


def test_flags_beat_environment(tmp_path, image_dir):
    env_store, flag_store = tmp_path / "env-store", tmp_path / "flag-store"
    run("--model", "tiny-test", "--data-dir", str(flag_store), "index", str(image_dir), data_dir=env_store)
    assert (flag_store / "catalog.sqlite").exists() and not env_store.exists()
    out = json.loads(run("status", "--json", data_dir=flag_store).stdout)
    assert out["live"] == 12


def test_help_lists_every_command():
    from img_agent.cli.main import build_parser

    lines = build_parser().format_help().splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("     ")]
    assert listed == ["index", "search", "remove", "merge", "rebuild", "status", "tag", "tags", "describe", "duplicates",
                      "watch", "doctor", "repair", "backup", "migrate", "service", "web", "serve", "tools", "ask", "chat", "bench"]


def test_json_errors_are_json_on_stdout_with_the_same_exit_status(tmp_path):
    bad = run("--json", "search", data_dir=tmp_path / "store", check=False)
    assert bad.returncode == 1 and bad.stderr == ""
    error = json.loads(bad.stdout)["error"]
    assert error["type"] == "InvalidInputError" and "Give exactly one of" in error["message"]


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    proc = subprocess.Popen([sys.executable, "-m", "img_agent", "--json", "tools", "--format", "mcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `| head -c 0`: nobody reads what the command prints
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_each_group_adds_exactly_its_commands_and_a_command_needs_only_its_group():
    from img_agent.cli.main import GROUPS, _command, build_parser

    for group in GROUPS:
        for command in group.COMMANDS:
            parser = build_parser(command)
            listed = [a.choices for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
            assert set(listed[0]) == set(group.COMMANDS)
    assert _command(["--data-dir", "search", "--json", "serve", "--root", "x"]) == "serve"
    assert _command(["--model=tiny-test", "status"]) == "status"
    assert _command(["bogus"]) is None and _command(["--version"]) is None
