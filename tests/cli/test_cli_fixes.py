"""The CLI as a subprocess: inputs that do not exist, and removing what is already removed."""

from __future__ import annotations

import json

from tests.cli.test_cli import run


def test_index_of_only_missing_paths_fails_and_names_them(tmp_path):
    data = tmp_path / "store"
    missing = tmp_path / "no" / "such" / "dir"
    bad = run("--model", "tiny-test", "index", str(missing), data_dir=data, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert str(missing) in bad.stderr and "no such file or folder" in bad.stderr
    assert "Check the path" in bad.stderr  # says what to do


def test_index_with_some_missing_paths_indexes_the_rest_and_names_the_missing(tmp_path, image_dir):
    data = tmp_path / "store"
    missing = tmp_path / "gone"
    out = run("--model", "tiny-test", "index", str(image_dir), str(missing), data_dir=data)
    assert "Added 12" in out.stdout
    assert f"skipped {missing}" in out.stdout  # listed among the skipped, with its reason
    assert "warning: no such file or folder" in out.stderr and str(missing) in out.stderr

    as_json = run("index", str(image_dir), str(missing), "--json", data_dir=data)
    report = json.loads(as_json.stdout)["report"]
    assert [s["path"] for s in report["skipped"]] == [str(missing)]
    assert str(missing) in as_json.stderr


def test_removing_an_already_removed_id_is_reported_not_an_error(tmp_path, image_dir):
    data = tmp_path / "store"
    run("--model", "tiny-test", "index", str(image_dir), data_dir=data)
    first = json.loads(run("remove", "0", "--json", data_dir=data).stdout)
    assert first["removed"] == [0] and first["already_removed"] == []

    again = run("remove", "0", data_dir=data)
    assert "Removed 0 image(s)" in again.stdout and "already removed: 0" in again.stdout

    mixed = json.loads(run("remove", "0", "424242", "--json", data_dir=data).stdout)
    assert mixed == {"removed": [], "already_removed": [0], "not_found": ["424242"], "dry_run": False}

    dry = json.loads(run("remove", "0", "--dry-run", "--json", data_dir=data).stdout)
    assert dry["removed"] == [] and dry["already_removed"] == [0] and dry["dry_run"]

    never = run("remove", "424242", data_dir=data, check=False)
    assert never.returncode == 1 and "No live image matched 424242" in never.stderr
