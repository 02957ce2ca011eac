"""Watching folders: changes settle into batches, and each batch brings the index in line with the files."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from img_agent.errors import AccessDeniedError, InvalidInputError, NotFoundError
from img_agent.index.engine import Engine
from img_agent.index.exclusions import EXCLUDED_REASON
from img_agent.index.watch import FolderWatch, apply_changes
from img_agent.testing import make_images
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox

DEBOUNCE = 0.3
DEADLINE_S = 10.0


@pytest.fixture
def engine(settings):
    with Engine.open(settings) as eng:
        yield eng


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def stock(tmp_path) -> list[Path]:
    """Distinct images outside the watched folder, to copy in."""
    return make_images(tmp_path / "stock", 6, seed=11)


def _live(engine: Engine) -> dict[str, int]:
    return {path: image_id for image_id, path in engine.catalog.live_paths_under("/")}


def _sync_until(watch: FolderWatch, engine: Engine, done: Callable[[], bool]) -> list[tuple[list[str], object]]:
    """Apply batches until ``done()``; the (batch, report) pairs applied. Fails after the deadline."""
    applied = []
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        left = deadline - time.monotonic()
        assert left > 0, f"the watch did not bring the index in line within {DEADLINE_S} s; applied {applied}"
        batch = watch.next_batch(timeout=left)
        if batch:
            applied.append((batch, apply_changes(engine, batch)))
    return applied


def _write_in_bursts(path: Path, data: bytes, pieces: int = 6) -> None:
    step = len(data) // pieces + 1
    with open(path, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start:start + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(0.02)


def test_add_change_and_delete_are_picked_up(engine, folder, stock):
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        target = folder / "a.jpg"
        shutil.copyfile(stock[0], target)
        _sync_until(watch, engine, lambda: str(target) in _live(engine))
        first_id = _live(engine)[str(target)]

        shutil.copyfile(stock[1], target)  # new content at the same path
        applied = _sync_until(watch, engine, lambda: _live(engine).get(str(target), first_id) != first_id)
        assert [r.replaced for _, r in applied if r.replaced] == [[first_id]]

        target.unlink()
        applied = _sync_until(watch, engine, lambda: str(target) not in _live(engine))
        assert sum(len(r.removed_missing) for _, r in applied) == 1
    assert engine.catalog.excluded_paths() == set()  # a vanished file is not "removed by request"
    shutil.copyfile(stock[1], target)
    assert engine.add_paths([folder]).added_paths == [str(target)]


def test_a_burst_of_writes_to_one_file_is_one_update(engine, folder, stock):
    data = stock[2].read_bytes()
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        target = folder / "burst.png"
        _write_in_bursts(target, data)
        applied = _sync_until(watch, engine, lambda: str(target) in _live(engine))
    assert len(applied) == 1
    batch, report = applied[0]
    assert batch == [str(target)]
    assert report.added_paths == [str(target)] and report.replaced == [] and report.skipped == []


def test_non_image_files_are_ignored(engine, folder, stock):
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        (folder / "notes.txt").write_text("not an image")
        (folder / "drawing.svg").write_text("<svg/>")
        time.sleep(DEBOUNCE * 2)  # let the ignored events settle first: they must form no batch of their own
        image = folder / "pic.jpg"
        shutil.copyfile(stock[0], image)
        applied = _sync_until(watch, engine, lambda: str(image) in _live(engine))
    assert [batch for batch, _ in applied] == [[str(image)]]
    assert set(_live(engine)) == {str(image)}


def test_a_rename_keeps_the_image_under_its_new_path(engine, folder, stock):
    old = folder / "old.jpg"
    shutil.copyfile(stock[3], old)
    engine.add_paths([folder])
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        new = folder / "renamed.jpg"
        old.rename(new)
        applied = _sync_until(watch, engine, lambda: set(_live(engine)) == {str(new)})
    assert all(not r.skipped for _, r in applied)  # the new path is no "duplicate" of the old entry
    assert engine.catalog.excluded_paths() == set()


def test_a_folder_moved_in_and_out(engine, folder, tmp_path):
    outside = tmp_path / "album"
    files = make_images(outside, 5, seed=21)
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        inside = folder / "album"
        shutil.move(outside, inside)
        expected = {str(inside / f.relative_to(outside)) for f in files}
        _sync_until(watch, engine, lambda: set(_live(engine)) == expected)
        shutil.move(inside, tmp_path / "gone-album")
        _sync_until(watch, engine, lambda: not _live(engine))
    assert engine.catalog.excluded_paths() == set()


def test_a_file_removed_by_request_stays_out_when_it_changes(engine, folder, stock):
    kept, removed = folder / "kept.jpg", folder / "removed.jpg"
    shutil.copyfile(stock[0], kept)
    shutil.copyfile(stock[1], removed)
    engine.add_paths([folder])
    engine.remove(paths=[removed])
    with FolderWatch([folder], debounce=DEBOUNCE) as watch:
        shutil.copyfile(stock[2], removed)
        shutil.copyfile(stock[3], kept)
        applied = _sync_until(watch, engine, lambda: _holds(engine, kept, stock[3]))  # changed after removed
    skipped = {s.path: s.reason for _, r in applied for s in r.skipped}
    assert skipped == {str(removed): EXCLUDED_REASON}
    assert str(removed) not in _live(engine)


def _holds(engine: Engine, path: Path, source: Path) -> bool:
    """Whether ``path`` is indexed with the content of ``source``."""
    live = _live(engine)
    if str(path) not in live:
        return False
    return engine.get([live[str(path)]])[0].sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_watch_refuses_what_is_not_a_folder(folder, tmp_path):
    with pytest.raises(NotFoundError, match="no such folder"):
        FolderWatch([tmp_path / "missing"])
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="not a folder"):
        FolderWatch([tmp_path / "file.jpg"])
    with pytest.raises(InvalidInputError):
        FolderWatch([folder], debounce=-1)


def test_stop_ends_a_waiting_batch(folder):
    watch = FolderWatch([folder], debounce=DEBOUNCE).start()
    watch.stop()
    assert watch.next_batch(timeout=5) is None and list(watch.batches()) == []


def test_the_sync_paths_tool_applies_changes_inside_the_sandbox_only(engine, folder, stock, tmp_path):
    tools = ImageTools(engine, Sandbox([folder], max_file_bytes=engine.settings.max_file_bytes))
    image = folder / "tool.jpg"
    shutil.copyfile(stock[4], image)
    report = tools.sync_paths(paths=[str(image)])
    assert report.added_paths == [str(image)]
    image.unlink()
    gone = tools.sync_paths(paths=[str(image)])
    assert gone.removed_missing == report.added and str(image) not in _live(engine)
    with pytest.raises(AccessDeniedError):
        tools.sync_paths(paths=[str(stock[0])])
    assert not _live(engine)
