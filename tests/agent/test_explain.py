"""Explanations grounded in the results, with thumbnails when the model accepts them."""

from __future__ import annotations

from img_agent.agent.explain import describe_hit, explain_results
from img_agent.results import SearchHit
from img_agent.testing.fake_engine import FakeEngine, hit
from img_agent.testing.fake_llm import request_images, request_text

HITS = [hit(i, 0.3 - i / 100, rank=i) for i in range(1, 7)]


def test_describe_hit_lists_the_facts():
    h = SearchHit(**hit(3, 0.2871).model_dump(exclude={"tags", "description"}), tags=["beach"], description="Sunset")
    line = describe_hit(2, h)
    assert line.startswith('[2] "/photos/img_003.jpg" — score 0.287; 640x480 JPEG')
    assert 'tags: "beach"' in line and 'description: "Sunset"' in line


def test_explanation_with_thumbnails(llm, fake_llm):
    engine = FakeEngine()
    fake_llm.reply("Images 1 and 2 show dogs on grass.")
    result = explain_results(
        llm, "dog", HITS, thumbnails=engine, expanded_queries=["dog", "puppy"], max_images=2
    )
    assert result.text == "Images 1 and 2 show dogs on grass."
    assert result.llm_used is True
    assert result.images_sent == 2
    body = fake_llm.requests[0]
    assert len(request_images(body)) == 2
    text = request_text(body)
    assert '[1] "/photos/img_001.jpg" — score 0.290' in text
    assert '"puppy"' in text
    assert "Thumbnails of 2 of the images are attached" in text
    assert engine.thumbnails_made == [1, 2]


def test_model_without_images_gets_metadata_only(llm, fake_llm):
    engine = FakeEngine()
    fake_llm.refuse_images = True
    fake_llm.reply("Based on file names only: ...")
    result = explain_results(llm, "dog", HITS, thumbnails=engine)
    assert result.text.startswith("Based on file names")
    assert result.images_sent == 0
    assert any("refused images" in n for n in result.notes)
    assert [len(request_images(r)) for r in fake_llm.requests] == [4, 0]
    assert "No thumbnails are attached" in request_text(fake_llm.requests[1])
    # remembered: the next explanation goes straight to text and makes no thumbnails
    engine.thumbnails_made.clear()
    fake_llm.reply("again")
    assert explain_results(llm, "dog", HITS, thumbnails=engine).images_sent == 0
    assert engine.thumbnails_made == []
    assert len(fake_llm.requests) == 3


def test_unreadable_thumbnail_is_skipped_with_a_note(llm, fake_llm):
    engine = FakeEngine(broken_thumbnails={2})
    fake_llm.reply("ok")
    result = explain_results(llm, "dog", HITS, thumbnails=engine, max_images=3)
    assert result.images_sent == 2
    assert "[2]" in result.notes[0]
    labels = [p["text"] for p in fake_llm.requests[0]["messages"][1]["content"] if p["type"] == "text"][1:]
    assert labels == ['[1] "/photos/img_001.jpg"', '[3] "/photos/img_003.jpg"']


def test_no_llm_no_explanation():
    result = explain_results(None, "dog", HITS)
    assert result.text is None and result.llm_used is False
    assert "No LLM configured" in result.notes[0]


def test_nothing_found_needs_no_call(llm, fake_llm):
    result = explain_results(llm, "dog", [])
    assert result.text is None
    assert fake_llm.requests == []


def test_llm_failure_gives_a_note(llm, fake_llm):
    fake_llm.error(503)
    fake_llm.error(503)
    result = explain_results(llm, "dog", HITS)
    assert result.text is None and result.llm_used is False
    assert result.notes[-1].startswith("Explanation failed:")
