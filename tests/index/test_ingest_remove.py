"""Removing through the engine and the tools: removing again is reported, not an error."""

from __future__ import annotations

import pytest

from img_agent.errors import NotFoundError
from img_agent.index.engine import Engine
from img_agent.testing.fake_engine import FakeEngine
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.render import render_remove
from img_agent.tools.sandbox import Sandbox


@pytest.fixture
def engine(settings):
    with Engine.open(settings) as eng:
        yield eng


def test_remove_again_lists_the_id_as_already_removed(engine, image_dir):
    ids = engine.add_paths([image_dir]).added
    first = engine.remove(ids=[ids[0], ids[1]])
    assert first.removed == [ids[0], ids[1]] and first.already_removed == [] and first.not_found == []

    again = engine.remove(ids=[ids[0]])
    assert again.removed == [] and again.already_removed == [ids[0]] and again.not_found == []

    mixed = engine.remove(ids=[ids[1], ids[2], 10**6, 2**70])
    assert mixed.removed == [ids[2]] and mixed.already_removed == [ids[1]]
    assert mixed.not_found == [str(10**6), str(2**70)]

    with pytest.raises(NotFoundError, match="No live image matched 1000000"):
        engine.remove(ids=[10**6])
    assert engine.status().live == len(ids) - 3


def test_removing_a_removed_file_by_path_again_is_reported_not_an_error(engine, image_dir):
    tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=engine.settings.max_file_bytes))
    ids = engine.add_paths([image_dir]).added
    path = engine.get([ids[0]])[0].path
    assert tools.remove_images(paths=[path]).removed == [ids[0]]
    again = tools.remove_images(paths=[path])
    assert again.removed == [] and again.already_removed == [ids[0]] and again.not_found == []
    with pytest.raises(NotFoundError, match="No live image matched"):
        tools.remove_images(paths=[str(image_dir / "never-indexed.jpg")])
    assert engine.status().live == len(ids) - 1


def test_remove_images_tool_is_idempotent_and_renders_already_removed(engine, image_dir):
    tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=engine.settings.max_file_bytes))
    image_id = engine.add_paths([image_dir]).added[0]
    tools.remove_images(ids=[image_id])
    report = tools.remove_images(ids=[image_id])
    assert report.already_removed == [image_id] and report.removed == []
    assert f"Already removed (nothing to do): {image_id}" in render_remove(report)


def test_the_fake_engine_reports_already_removed_the_same_way():
    fake = FakeEngine()
    image_id, unknown = min(fake.live), max(fake.records) + 1
    fake.remove(ids=[image_id])
    report = fake.remove(ids=[image_id, unknown])
    assert report.already_removed == [image_id] and report.not_found == [str(unknown)] and report.removed == []
    with pytest.raises(NotFoundError):
        fake.remove(ids=[unknown])
