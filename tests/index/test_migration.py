"""A store written by format version 1 opens, upgrades in place and keeps every vector and result."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from img_agent.errors import StoreVersionError
from img_agent.index.catalog import FORMAT_VERSION, Catalog
from img_agent.index.engine import Engine

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store, ignore=shutil.ignore_patterns("expected.json"))
    return store


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_1_store_is_migrated_in_place_without_re_encoding(old_store, settings):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    vectors_before = _digest(old_store / "vectors.f32")
    index_before = {p.name: _digest(p) for p in (old_store / "index").iterdir()}

    with Engine.open(settings.model_copy(update={"data_dir": old_store})) as engine:
        status = engine.status()
        assert status.live == expected["live"]
        hits = engine.search_text(expected["query"], k=3)
        assert [[h.id, round(h.score, 4)] for h in hits] == expected["top3"]
        record = engine.get([0])[0]
        assert record.path.endswith("img_0000.jpg") and record.tags == [] and record.taken_at is None

    assert _digest(old_store / "vectors.f32") == vectors_before  # nothing re-encoded or rewritten
    assert {p.name: _digest(p) for p in (old_store / "index").iterdir()} == index_before
    db = sqlite3.connect(old_store / "catalog.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0] == str(FORMAT_VERSION)
    columns = {r[1] for r in db.execute("PRAGMA table_info(images)")}
    assert {"taken_at", "camera_model", "gps_lat", "meta_read"} <= columns and "tags" not in columns
    assert db.execute("SELECT count(*) FROM images WHERE meta_read = 0").fetchone()[0] == 10  # read on next index
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"image_tags", "excluded_paths"} <= tables


def test_version_1_store_in_a_read_only_folder_says_how_to_upgrade(old_store, settings):
    with pytest.raises(StoreVersionError, match="Open it once where it is writable"):
        Catalog(old_store / "catalog.sqlite", read_only=True)
