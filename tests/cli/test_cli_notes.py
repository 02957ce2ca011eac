"""``tag``, ``tags`` and ``describe`` as a subprocess, through the store's service and without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"IMG_AGENT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    proc = subprocess.run([sys.executable, "-m", "img_agent", *args], capture_output=True, text=True, env=env,
                          timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_tags_and_descriptions_round_trip(tmp_path: Path, image_dir: Path, fake_llm) -> None:
    data = tmp_path / "store"
    added = json.loads(run("--model", "tiny-test", "index", str(image_dir), "--json", data_dir=data).stdout)
    ids = sorted(added["report"]["added"])
    sub = sorted(i for i, p in zip(added["report"]["added"], added["report"]["added_paths"]) if "/sub/" in p)
    other = next(i for i in ids if i not in sub)

    tagged = json.loads(run("tag", str(image_dir / "sub"), "--add", "Forest", "--add", " green  leaves ", "--json",
                            data_dir=data).stdout)
    assert tagged["changed"] == sub and tagged["not_found"] == []
    again = json.loads(run("tag", str(sub[0]), str(other), "--add", "FOREST", "--json", data_dir=data).stdout)
    assert again == {"changed": [other], "unchanged": [sub[0]], "not_found": []}

    table = run("tags", data_dir=data).stdout.splitlines()
    assert table[0].split() == ["count", "tag"]
    assert table[1].split() == [str(len(sub) + 1), "Forest"] and table[2].split() == [str(len(sub)), "green", "leaves"]
    assert table[-1] == "12 image(s) have no description."
    listed = json.loads(run("tags", "--json", data_dir=data).stdout)
    assert listed["tags"][0] == {"tag": "Forest", "count": len(sub) + 1}

    human = run("describe", str(other), "--text", "A tree.", data_dir=data).stdout
    assert human.startswith(f"Description changed on 1 image(s): {other}.")
    hits = json.loads(run("search", "a tree", "-k", "12", "--json", data_dir=data).stdout)
    by_id = {h["id"]: h for h in hits}
    assert by_id[other]["description"] == "A tree." and by_id[other]["tags"] == ["FOREST"]
    assert by_id[sub[0]]["tags"] == ["Forest", "green leaves"]
    assert json.loads(run("describe", str(other), "--clear", "--json", data_dir=data).stdout)["changed"] == [other]

    (tmp_path / str(other)).write_text("a file named like an id")  # the command runs in tmp_path
    ambiguous = run("tag", str(other), "--add", "x", data_dir=data, check=False)
    assert ambiguous.returncode == 1 and "Ambiguous" in ambiguous.stderr and "--id" in ambiguous.stderr
    assert json.loads(run("tag", str(other), "--id", "--add", "x", "--json", data_dir=data).stdout)["changed"] == [other]

    no_llm = run("describe", "--llm", data_dir=data, check=False)
    assert no_llm.returncode == 1 and "LLM_BASE_URL" in no_llm.stderr
    fake_llm.reply("Leaves in the sun.")
    fake_llm.reply("A dark pond.")
    llm = ("--llm-base-url", fake_llm.url, "--llm-model", "fake-model")
    described = json.loads(run("describe", "--llm", "--limit", "2", *llm, "--json", data_dir=data).stdout)
    assert described["described"] == ids[:2] and described["remaining"] == 10

    run("service", "stop", data_dir=data)
    fake_llm.reply("Stripes.")
    local = run("--no-service", "describe", "--llm", str(image_dir / "sub"), "--limit", "1", *llm, data_dir=data).stdout
    assert local.startswith("Described 1 image(s).")
    assert len(fake_llm.requests) == 3
