"""The note tools over a real engine: tags and descriptions by id and path, confined; LLM descriptions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from img_agent.errors import AccessDeniedError, InvalidInputError, LLMNotConfiguredError, NotFoundError, StoreReadOnlyError
from img_agent.index import store_files
from img_agent.index.engine import Engine
from img_agent.testing import make_images
from img_agent.testing.fake_llm import request_images, request_text
from img_agent.tools.image_tools import ImageTools, get_spec
from img_agent.tools.sandbox import Sandbox


@pytest.fixture
def engine(settings, image_dir):
    with Engine.open(settings) as eng:
        eng.add_paths([image_dir])
        yield eng


def tools_over(engine: Engine, image_dir: Path, llm=None) -> ImageTools:
    return ImageTools(engine, Sandbox([image_dir], max_file_bytes=engine.settings.max_file_bytes), llm=llm)


def ids_under(engine: Engine, folder: Path) -> list[int]:
    return engine.notes.ids_for_paths([folder])[0]


def test_tag_by_folder_and_ids_and_see_tags_in_hits(engine, image_dir):
    tools = tools_over(engine, image_dir)
    sub = ids_under(engine, image_dir / "sub")
    assert sub and len(sub) < 12
    report = tools.tag_images(paths=[str(image_dir / "sub")], add=["Sub Folder"])
    assert report.changed == sub and report.not_found == []
    everything = ids_under(engine, image_dir)
    report = tools.tag_images(ids=everything, paths=[str(image_dir / "nothing-here")], add=["sub folder", "all"])
    assert report.changed == everything and report.not_found == [str((image_dir / "nothing-here").resolve())]
    by_id = {r.id: r.tags for r in engine.get(everything)}
    assert all(by_id[i] == (["Sub Folder", "all"] if i in sub else ["all", "sub folder"]) for i in everything)
    hits = tools.search_by_text(query="a picture", k=12).hits
    assert {h.id: h.tags for h in hits} == by_id
    listed = tools.list_tags()
    assert [(t.tag, t.count) for t in listed.tags] == [("all", 12), ("sub folder", 12)]
    assert listed.total_tags == 2 and listed.images_without_description == 12


def test_not_found_and_removed_ids(engine, image_dir):
    tools = tools_over(engine, image_dir)
    [first, second, *_] = ids_under(engine, image_dir)
    engine.remove(ids=[second])
    report = tools.tag_images(ids=[first, second, 10**6], add=["x"])
    assert report.changed == [first] and report.not_found == [str(second), str(10**6)]
    with pytest.raises(NotFoundError, match=f"No live image has id {second}"):
        tools.tag_images(ids=[second], add=["x"])
    with pytest.raises(NotFoundError, match="No live image is indexed"):
        tools.tag_images(paths=[str(image_dir / "missing.jpg")], add=["x"])
    with pytest.raises(InvalidInputError, match="ids and/or paths"):
        tools.tag_images(add=["x"])


def test_paths_and_ids_outside_the_sandbox_are_refused(engine, image_dir, tmp_path):
    outside = tmp_path / "outside"
    make_images(outside, 2, seed=7)
    engine.add_paths([outside])
    tools = tools_over(engine, image_dir)
    [inside_id, *_] = ids_under(engine, image_dir)
    [outside_id, _] = ids_under(engine, outside)
    with pytest.raises(AccessDeniedError, match="outside the allowed folders"):
        tools.tag_images(paths=[str(outside)], add=["x"])
    with pytest.raises(AccessDeniedError, match=f"id {outside_id}"):
        tools.set_description(ids=[inside_id, outside_id], description="x")
    assert [r.tags for r in engine.get([inside_id, outside_id])] == [[], []]
    assert engine.get([inside_id])[0].description is None


def test_set_description_tool(engine, image_dir):
    tools = tools_over(engine, image_dir)
    ids = ids_under(engine, image_dir)[:3]
    assert tools.set_description(ids=ids, description="Generated pattern.").changed == ids
    assert {r.description for r in engine.get(ids)} == {"Generated pattern."}
    assert tools.set_description(ids=ids[:1], clear=True).changed == ids[:1]
    assert engine.get(ids[:1])[0].description is None
    for bad in ({}, {"description": "x", "clear": True}):
        with pytest.raises(InvalidInputError, match="either a description or clear"):
            tools.set_description(ids=ids, **bad)
    spec = get_spec("tag_images")  # the tag rule's error reaches every surface as the tool's message
    with pytest.raises(InvalidInputError, match="tag is empty"):
        spec.call(tools, spec.parse({"ids": ids, "add": ["  "]}))


def test_describe_images_writes_respects_limit_resumes_and_skips(engine, image_dir, llm, fake_llm):
    tools = tools_over(engine, image_dir, llm)
    everything = ids_under(engine, image_dir)
    for n in range(3):
        fake_llm.reply(f"A generated pattern, number {n}.\nSecond line\x1b[2J")
    seen: list[tuple[int, int | None]] = []
    report = tools.describe_images(limit=3, progress=lambda done, total, _m: seen.append((done, total)))
    assert report.described == everything[:3] and report.failed == [] and report.remaining == 9
    assert seen and seen[-1] == (3, 3)
    descriptions = [r.description for r in engine.get(everything[:4])]
    assert descriptions[:3] == [f"A generated pattern, number {n}. Second line\\x1b[2J" for n in range(3)]
    assert descriptions[3] is None
    assert len(fake_llm.requests) == 3 and all(len(request_images(body)) == 1 for body in fake_llm.requests)
    assert '"' + Path(engine.get(everything[:1])[0].path).name + '"' in request_text(fake_llm.requests[0])

    fake_llm.reply("Next one.")
    report = tools.describe_images(limit=1)  # resumes with the first undescribed image
    assert report.described == [everything[3]] and report.remaining == 8

    fake_llm.reply("Redone.")
    report = tools.describe_images(ids=everything[:4], limit=1)
    assert report.described == [] and report.remaining == 0 and "already" in report.notes[0]
    report = tools.describe_images(ids=everything[:4], limit=1, overwrite=True)
    assert report.described == [everything[0]] and engine.get(everything[:1])[0].description == "Redone."
    assert len(fake_llm.requests) == 5


def test_describe_images_caps_untrusted_text_and_reports_failures(engine, image_dir, llm, fake_llm):
    tools = tools_over(engine, image_dir, llm)
    everything = ids_under(engine, image_dir)
    fake_llm.reply("word " * 1000)
    fake_llm.error(400, "bad request")  # not retried: fails this image
    fake_llm.reply("Fine.")
    report = tools.describe_images(limit=3)
    long = engine.get(everything[:1])[0].description
    assert long is not None and len(long) <= 2000 and long.endswith("\u2026")
    assert report.described == [everything[0], everything[2]]
    assert [f.id for f in report.failed] == [everything[1]] and report.remaining == 10


def test_describe_images_stops_when_the_llm_keeps_failing_or_sees_no_images(engine, image_dir, make_llm, fake_llm):
    tools = tools_over(engine, image_dir, make_llm(max_retries=0))
    for _ in range(4):
        fake_llm.error(400, "bad request")
    report = tools.describe_images(limit=5)
    assert len(report.failed) == 3 and report.described == [] and "in a row" in report.notes[-1]

    blind = tools_over(engine, image_dir, make_llm(vision="no"))
    report = blind.describe_images(limit=5)
    assert report.described == [] and "multimodal" in report.notes[-1]


def test_describe_images_is_a_cancellable_job(engine, image_dir, llm, fake_llm):
    tools = tools_over(engine, image_dir, llm)
    for n in range(5):
        fake_llm.slow(0.3, then=f"Slow {n}.")
    started = tools.describe_images(limit=5, wait=False)
    assert started.job is not None and started.job.kind == "describe" and started.job.state == "running"
    info = tools.cancel_job(started.job.id)
    assert info.state == "cancelled"
    assert info.result["cancelled"] is True and len(info.result["described"]) < 5


def test_describe_images_without_an_llm_or_on_a_read_only_store(image_dir, settings, llm, fake_llm, monkeypatch):
    with Engine.open(settings) as engine:
        engine.add_paths([image_dir])
        with pytest.raises(LLMNotConfiguredError, match="LLM_BASE_URL"):
            tools_over(engine, image_dir).describe_images()
    monkeypatch.setattr(store_files, "lock_store", lambda _dir: (store_files.NoLock(), True))
    with Engine.open(settings) as ro:
        tools = tools_over(ro, image_dir, llm)
        with pytest.raises(StoreReadOnlyError):
            tools.describe_images()
        with pytest.raises(StoreReadOnlyError):
            tools.tag_images(ids=[0], add=["x"])
    assert fake_llm.requests == []


def test_the_cancel_event_of_a_waiting_call_leaves_the_job_running(engine, image_dir, llm, fake_llm):
    tools = tools_over(engine, image_dir, llm)
    fake_llm.slow(0.5, then="Slow.")
    cancel = threading.Event()
    cancel.set()
    report = tools.describe_images(limit=1, cancel=cancel)
    assert report.job is not None
    info, final = tools.jobs.wait(report.job.id, timeout=10)
    assert info.state == "done" and final.described == ids_under(engine, image_dir)[:1]
