"""``img-agent duplicates`` end to end, as a subprocess, on generated images and their resized copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from test_cli import run

from img_agent.testing import make_images

THRESHOLD = "0.999"  # tiny-test (random weights): a resized copy scores >= 0.9999 to its original


def _photos(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    originals = make_images(tmp_path / "photos", 6, size=(160, 120))
    copies = []
    for path in originals[:2]:
        copy = tmp_path / "photos" / "copies" / (path.stem + "_small.jpg")
        copy.parent.mkdir(exist_ok=True)
        Image.open(path).convert("RGB").resize((80, 60), Image.LANCZOS).save(copy, quality=80)
        copies.append(copy)
    return originals, copies


def test_duplicates_lists_groups_and_removes_extras(tmp_path: Path) -> None:
    data = tmp_path / "store"
    originals, copies = _photos(tmp_path)
    run("--model", "tiny-test", "--no-service", "index", str(tmp_path / "photos"), data_dir=data)

    local = json.loads(run("--no-service", "duplicates", "--threshold", THRESHOLD, "--json", data_dir=data).stdout)
    assert local["compared"] == 8 and local["threshold"] == float(THRESHOLD) and local["method"] == "exact flat"
    ids = {im["path"]: im["id"] for g in local["groups"] for im in g["images"]}
    for original, copy in zip(originals, copies):
        group = next(g for g in local["groups"] if str(copy.resolve()) in [im["path"] for im in g["images"]])
        assert ids[str(copy.resolve())] in group["extras"] and group["images"][0]["width"] == 160
        assert str(original.resolve()) in [im["path"] for im in group["images"]]

    served = json.loads(run("duplicates", "--threshold", THRESHOLD, "--json", data_dir=data).stdout)
    assert [g["images"] for g in served["groups"]] == [g["images"] for g in local["groups"]]

    human = run("duplicates", "--threshold", THRESHOLD, data_dir=data).stdout
    for group in local["groups"]:
        keeper = next(im for im in group["images"] if im["keeper"])
        assert any(line.split()[:2] == ["*", str(keeper["id"])] for line in human.splitlines())
    assert f"{local['total_groups']} groups, {local['total_extras']} extra images among 8 images" in human

    folder = json.loads(run("duplicates", str(tmp_path / "photos" / "copies"), "--threshold", THRESHOLD, "--json",
                            data_dir=data).stdout)
    assert folder["compared"] == 2 and folder["folder"] == str((tmp_path / "photos" / "copies").resolve())

    removed = json.loads(run("duplicates", "--threshold", THRESHOLD, "--remove-extras", "--json", data_dir=data).stdout)
    extras = sorted(i for g in local["groups"] for i in g["extras"])
    assert sorted(removed["removed"]["removed"]) == extras and removed["duplicates"]["total_extras"] == len(extras)
    status = json.loads(run("status", "--json", data_dir=data).stdout)
    assert status["live"] == 8 - len(extras)
    again = json.loads(run("duplicates", "--threshold", THRESHOLD, "--json", data_dir=data).stdout)
    assert again["total_groups"] == 0 and again["compared"] == 8 - len(extras)
    assert "No duplicates among" in run("duplicates", "--threshold", THRESHOLD, data_dir=data).stdout

    bad = run("duplicates", "--threshold", "1.5", data_dir=data, check=False)
    assert bad.returncode == 1 and "threshold" in bad.stderr and bad.stdout == ""
    help_text = subprocess.run([sys.executable, "-m", "img_agent", "duplicates", "--help"], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    assert "--remove-extras" in help_text and "--threshold" in help_text
