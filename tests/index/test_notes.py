"""Tags and descriptions on the store side (:class:`img_agent.index.notes.Notes`), over precomputed vectors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from img_agent.errors import InvalidInputError, NotFoundError, StoreReadOnlyError
from img_agent.index import store_files
from img_agent.index.engine import Engine
from img_agent.index.notes import MAX_DESCRIPTION_CHARS, normalise_tag, normalise_tags

PATHS = [f"/photos/{folder}/{n}.jpg" for folder in ("trip", "home") for n in range(4)]


@pytest.fixture
def engine(settings, rng):
    with Engine.open(settings) as eng:
        eng.add_vectors(rng.standard_normal((len(PATHS), 16)).astype(np.float32), PATHS)
        yield eng


def tags_of(engine: Engine, ids: list[int]) -> dict[int, list[str]]:
    return {r.id: r.tags for r in engine.get(ids)}


def test_the_tag_rule():
    assert normalise_tag("  sunny \t\n day ") == "sunny day"
    assert normalise_tag("x" * 64) == "x" * 64
    assert normalise_tags(["Beach", "beach", " BEACH ", "sea"]) == ["Beach", "sea"]
    for bad in ("", "   ", "x" * 65, 5):
        with pytest.raises(InvalidInputError, match="tag"):
            normalise_tag(bad)


def test_bulk_tags_by_id_are_added_removed_and_replaced(engine):
    report = engine.notes.edit_tags([0, 1, 2], add=["beach", "  sunny   day "])
    assert report.changed == [0, 1, 2] and report.unchanged == [] and report.not_found == []
    assert tags_of(engine, [0, 1, 2, 3]) == {0: ["beach", "sunny day"], 1: ["beach", "sunny day"],
                                             2: ["beach", "sunny day"], 3: []}
    assert engine.notes.edit_tags([0, 3], remove=["SUNNY DAY"]).changed == [0]
    assert tags_of(engine, [0, 1]) == {0: ["beach"], 1: ["beach", "sunny day"]}
    # replace first, then remove, then add
    report = engine.notes.edit_tags([1, 2], replace=["sea", "dog"], remove=["dog"], add=["cat"])
    assert tags_of(engine, [1, 2]) == {1: ["cat", "sea"], 2: ["cat", "sea"]}
    assert engine.notes.edit_tags([1], replace=[]).changed == [1] and tags_of(engine, [1]) == {1: []}
    with pytest.raises(InvalidInputError, match="Nothing to do"):
        engine.notes.edit_tags([1])


def test_tags_are_unique_per_image_whatever_the_case(engine):
    engine.notes.edit_tags([0], add=["beach"])
    report = engine.notes.edit_tags([0, 1], add=["Beach"])
    assert report.changed == [1] and report.unchanged == [0]
    assert tags_of(engine, [0, 1]) == {0: ["beach"], 1: ["Beach"]}  # case kept as first given
    engine.notes.edit_tags([0], remove=["beach"], add=["BEACH"])  # a change of case: remove, then add
    assert tags_of(engine, [0]) == {0: ["BEACH"]}


def test_a_bad_tag_changes_nothing(engine):
    engine.notes.edit_tags([0], add=["keep"])
    for bad in (["ok", "   "], ["ok", "y" * 65]):
        with pytest.raises(InvalidInputError):
            engine.notes.edit_tags([0, 1], add=bad)
    assert tags_of(engine, [0, 1]) == {0: ["keep"], 1: []}


def test_removed_ids_are_refused_and_nothing_changes(engine):
    engine.remove(ids=[2])
    with pytest.raises(NotFoundError, match=r"No live image has id 2, 99\b.*nothing was changed"):
        engine.notes.edit_tags([1, 2, 99], add=["x"])
    with pytest.raises(NotFoundError, match="id 2"):
        engine.notes.set_description([2], "gone")
    assert tags_of(engine, [1]) == {1: []}
    report = engine.notes.edit_tags([1, 2, 99], add=["x"], skip_missing=True)
    assert report.changed == [1] and report.not_found == ["2", "99"]
    with pytest.raises(NotFoundError):
        engine.notes.edit_tags([2], add=["x"], skip_missing=True)  # nothing live at all


def test_tag_counts_over_live_images(engine):
    engine.notes.edit_tags([0, 1, 2], add=["beach"])
    engine.notes.edit_tags([3], add=["Beach"])
    engine.notes.edit_tags([4, 5], add=["dog"])
    engine.notes.edit_tags([6, 7], add=["cat"])
    engine.notes.edit_tags([7], add=["zebra"])
    counts = [(c.tag, c.count) for c in engine.notes.tag_counts()]
    assert counts == [("beach", 4), ("cat", 2), ("dog", 2), ("zebra", 1)]
    engine.remove(ids=[6, 7])
    assert [(c.tag, c.count) for c in engine.notes.tag_counts()] == [("beach", 4), ("dog", 2)]


def test_descriptions_set_clear_and_select(engine):
    report = engine.notes.set_description([0, 1], "  Two dogs on a beach.  ")
    assert report.changed == [0, 1]
    assert [r.description for r in engine.get([0, 1, 2])] == ["Two dogs on a beach.", "Two dogs on a beach.", None]
    assert engine.notes.set_description([0], "Two dogs on a beach.").unchanged == [0]
    assert engine.notes.to_describe() == [2, 3, 4, 5, 6, 7]
    assert engine.notes.to_describe(limit=2) == [2, 3]
    assert engine.notes.to_describe([1, 5, 3], limit=1) == [3]
    assert engine.notes.to_describe([0, 1], overwrite=True) == [0, 1]
    assert engine.notes.set_description([0], None).changed == [0]
    assert engine.get([0])[0].description is None
    assert engine.notes.set_description(range(8), "x" * MAX_DESCRIPTION_CHARS).changed == list(range(8))
    for bad in ("", "   ", "x" * (MAX_DESCRIPTION_CHARS + 1)):
        with pytest.raises(InvalidInputError, match="description"):
            engine.notes.set_description([0], bad)


def test_paths_and_folders_name_live_images(engine):
    assert engine.notes.ids_for_paths(["/photos/trip", "/photos/home/1.jpg", "/elsewhere"]) == ([0, 1, 2, 3, 5],
                                                                                                ["/elsewhere"])
    engine.remove(ids=[0])
    assert engine.notes.ids_for_paths(["/photos/trip/"])[0] == [1, 2, 3]


def test_tags_show_in_search_hits_and_never_touch_vectors_or_index(engine, settings):
    data = settings.data_dir
    engine.merge()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [data / "vectors.f32", *(data / "index").iterdir()]}
    engine.notes.edit_tags([3], add=["lighthouse"])
    engine.notes.set_description([3], "A lighthouse at dusk.")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [data / "vectors.f32", *(data / "index").iterdir()]}
    assert after == before
    [hit] = engine.search_vectors(engine.store.get(np.array([3])), k=1)[0]
    assert hit.id == 3 and hit.tags == ["lighthouse"] and hit.description == "A lighthouse at dusk."


def test_a_read_only_store_refuses_changes_but_lists(settings, rng, monkeypatch):
    with Engine.open(settings) as engine:
        engine.add_vectors(rng.standard_normal((2, 16)).astype(np.float32), PATHS[:2])
        engine.notes.edit_tags([0], add=["beach"])
    monkeypatch.setattr(store_files, "lock_store", lambda _dir: (store_files.NoLock(), True))
    with Engine.open(settings) as ro:
        assert ro.read_only
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.notes.edit_tags([1], add=["x"])
        with pytest.raises(StoreReadOnlyError):
            ro.notes.set_description([1], "x")
        assert [(c.tag, c.count) for c in ro.notes.tag_counts()] == [("beach", 1)]
