"""Images removed by request stay removed when their folder is indexed again; naming the file brings it back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from img_agent.index.engine import Engine
from img_agent.index.exclusions import EXCLUDED_REASON
from img_agent.testing import make_images


@pytest.fixture
def engine(settings):
    with Engine.open(settings) as eng:
        yield eng


def _live_paths(engine: Engine) -> set[str]:
    return {path for _, path in engine.catalog.live_paths_under("/")}


def _skipped(report) -> dict[str, str]:
    return {item.path: item.reason for item in report.skipped}


def test_removed_by_id_stays_removed_when_its_folder_is_indexed_again(engine, image_dir):
    added = engine.add_paths([image_dir])
    victim_id, victim = added.added[0], added.added_paths[0]
    engine.remove(ids=[victim_id])

    again = engine.add_paths([image_dir])
    assert victim not in _live_paths(engine)
    assert _skipped(again) == {victim: EXCLUDED_REASON}
    assert again.added == [] and again.unchanged == len(added.added) - 1
    assert engine.status().live == len(added.added) - 1


def test_removed_by_folder_stays_removed_and_naming_a_file_brings_it_back(engine, image_dir):
    added = engine.add_paths([image_dir])
    sub = (image_dir / "sub").resolve()
    under = sorted(p for p in added.added_paths if p.startswith(str(sub) + os.sep))
    assert len(under) == 3
    engine.remove(paths=[sub])

    for target in (image_dir, sub):  # the parent folder and the removed folder itself are walks
        again = engine.add_paths([target])
        assert sorted(_skipped(again)) == under and set(_skipped(again).values()) == {EXCLUDED_REASON}
        assert not set(under) & _live_paths(engine)

    back = engine.add_paths([under[0], image_dir])  # the file named itself, and its folder in the same call
    assert back.added_paths == [under[0]]
    assert sorted(_skipped(back)) == under[1:]
    assert under[0] in _live_paths(engine)

    later = engine.add_paths([image_dir])  # readmitted for good: a later walk keeps it
    assert sorted(_skipped(later)) == under[1:] and later.added == []
    assert under[0] in _live_paths(engine)


def test_a_file_named_through_a_link_is_readmitted(engine, image_dir, tmp_path):
    added = engine.add_paths([image_dir])
    victim = added.added_paths[0]
    engine.remove(paths=[victim])
    link = tmp_path / "link.jpg"
    link.symlink_to(victim)
    assert engine.add_paths([link]).added_paths == [victim]
    assert engine.add_paths([image_dir]).skipped == []


def test_walked_mode_keeps_even_a_named_file_out(engine, image_dir):
    added = engine.add_paths([image_dir])
    victim = added.added_paths[0]
    engine.remove(paths=[victim])
    report = engine.add_paths([victim], walked=True)
    assert _skipped(report) == {victim: EXCLUDED_REASON} and victim not in _live_paths(engine)


def test_pruned_files_are_not_excluded(engine, tmp_path):
    folder = tmp_path / "photos"
    files = make_images(folder, 4, seed=3)
    engine.add_paths([folder])
    moved_away = tmp_path / "elsewhere.jpg"
    shutil.move(files[0], moved_away)
    pruned = engine.add_paths([folder], remove_missing=True)
    assert len(pruned.removed_missing) == 1
    assert engine.catalog.excluded_paths() == set()

    shutil.move(moved_away, files[0])  # the file comes back: the next walk adds it
    back = engine.add_paths([folder])
    assert back.added_paths == [str(files[0].resolve())] and back.skipped == []


def test_removal_without_exclude_is_not_remembered(engine, image_dir):
    added = engine.add_paths([image_dir])
    engine.remove(ids=[added.added[0]], exclude=False)
    assert engine.catalog.excluded_paths() == set()
    assert engine.add_paths([image_dir]).added_paths == [added.added_paths[0]]


def test_a_replaced_changed_file_is_not_excluded(engine, tmp_path):
    folder = tmp_path / "photos"
    files = make_images(folder, 3, seed=5)
    first = engine.add_paths([folder])
    make_images(tmp_path / "other", 1, seed=99)
    new_bytes = next((tmp_path / "other").rglob("*.jpg")).read_bytes()
    files[0].write_bytes(new_bytes)
    os.utime(files[0], (1_000_000, 1_000_000))
    changed = engine.add_paths([folder])
    assert changed.added_paths == [str(files[0].resolve())] and len(changed.replaced) == 1
    assert engine.catalog.excluded_paths() == set()
    assert engine.add_paths([folder]).skipped == []
    assert engine.status().live == len(first.added)


def test_exclusions_survive_reopening(settings, image_dir):
    with Engine.open(settings) as engine:
        victim = engine.add_paths([image_dir]).added_paths[0]
        engine.remove(paths=[Path(victim)])
    with Engine.open(settings) as engine:
        assert _skipped(engine.add_paths([image_dir])) == {victim: EXCLUDED_REASON}
