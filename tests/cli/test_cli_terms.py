"""``img-agent search`` with weights, --add and --subtract: the term parser, and one run of the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from img_agent.cli.terms import search_terms, split_weight, term
from img_agent.config import Settings
from img_agent.errors import InvalidInputError
from img_agent.index.engine import Engine


@pytest.mark.parametrize("item, want", [
    ("2:golden retriever", (2.0, "golden retriever")),
    ("0.5:./pool.jpg", (0.5, "./pool.jpg")),
    ("-1: fruit", (-1.0, "fruit")),
    ("+.25:a cat", (0.25, "a cat")),
    ("1e1:sky", (10.0, "sky")),
    (" 3 :sea", (3.0, "sea")),
    ("http://example.com/x.jpg", (None, "http://example.com/x.jpg")),
    ("a:b", (None, "a:b")),
    ("12h:30", (None, "12h:30")),
    ("2", (None, "2")),
    ("golden retriever", (None, "golden retriever")),
])
def test_split_weight(item, want):
    assert split_weight(item) == want


def test_a_weight_needs_a_term():
    with pytest.raises(InvalidInputError, match="weight but no term"):
        split_weight("2:  ")


def test_existing_files_are_images_anything_else_text(tmp_path, monkeypatch):
    pool = tmp_path / "pool.jpg"
    pool.write_bytes(b"x")
    odd = tmp_path / "2:odd.jpg"
    odd.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert term("pool.jpg") == {"path": str(pool), "weight": 1.0}
    assert term("0.5:pool.jpg") == {"path": str(pool), "weight": 0.5}
    assert term("2:pool.jpg", sign=-1.0) == {"path": str(pool), "weight": -2.0}
    assert term("2:odd.jpg") == {"path": str(odd), "weight": 1.0}  # the whole item names a file
    assert term("missing.jpg") == {"text": "missing.jpg", "weight": 1.0}
    assert term("a:b") == {"text": "a:b", "weight": 1.0}
    assert term(str(tmp_path)) == {"text": str(tmp_path), "weight": 1.0}  # a folder is no image
    assert term("pool.jpg", images=False) == {"text": "pool.jpg", "weight": 1.0}


def test_which_options_make_a_combined_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.jpg").write_bytes(b"x")
    # no algebra: the plain searches stay as they are
    assert search_terms("golden retriever") is None
    assert search_terms("a:b") is None
    assert search_terms("pool.jpg") is None  # the positional TEXT is always text
    assert search_terms(None, image="pool.jpg") is None
    assert search_terms(None, similar=3) is None
    assert search_terms(None) is None
    assert search_terms("2:golden retriever") == [{"text": "golden retriever", "weight": 2.0}]
    assert search_terms("2:golden retriever", add=["pool.jpg"], subtract=["fruit", "0.5:sky"]) == [
        {"text": "golden retriever", "weight": 2.0}, {"path": str(tmp_path / "pool.jpg"), "weight": 1.0},
        {"text": "fruit", "weight": -1.0}, {"text": "sky", "weight": -0.5},
    ]
    assert search_terms("a dog", similar=4) == [{"text": "a dog", "weight": 1.0}, {"image_id": 4, "weight": 1.0}]
    assert search_terms(None, image="pool.jpg", subtract=["a cat"]) == [
        {"path": str(tmp_path / "pool.jpg"), "weight": 1.0}, {"text": "a cat", "weight": -1.0}]


def run(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"IMG_AGENT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"})
    proc = subprocess.run([sys.executable, "-m", "img_agent", *args], capture_output=True, text=True, env=env, check=False,
                          timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"img-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_cli_combined_search_matches_the_oracle(tmp_path, image_dir):
    data = tmp_path / "store"
    run("--model", "tiny-test", "index", str(image_dir), data_dir=data)
    pool = min(image_dir.glob("*.png"))
    combined = json.loads(run("search", "2:a golden retriever", "--add", str(pool), "--subtract", "fruit",
                              "-k", "4", "--json", data_dir=data).stdout)
    like = json.loads(run("search", "--similar", "3", "--subtract", "0.5:a cat", "-k", "11", "--json",
                          data_dir=data).stdout)
    bad = run("search", "a dog", "--subtract", "a  dog", data_dir=data, check=False)
    assert bad.returncode == 1 and "cancel out" in bad.stderr
    run("service", "stop", data_dir=data)

    with Engine.open(Settings(data_dir=data, model="tiny-test")) as engine:
        x = engine.store.get(np.arange(12)).astype(np.float64)
        t = engine.encode_text(["a golden retriever", "fruit", "a cat"]).astype(np.float64)
        img = engine.encode_image(pool).astype(np.float64)
        q = 2 * t[0] / np.linalg.norm(t[0]) + img / np.linalg.norm(img) - t[1] / np.linalg.norm(t[1])
        want = np.argsort(-(x @ q), kind="stable")[:4].tolist()
        assert [h["id"] for h in combined] == want
        q = x[3] / np.linalg.norm(x[3]) - 0.5 * t[2] / np.linalg.norm(t[2])
        want = [int(i) for i in np.argsort(-(x @ q), kind="stable") if i != 3]
        assert [h["id"] for h in like] == want
