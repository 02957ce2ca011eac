"""Question answering over retrieved images, with and without image support, and its fallbacks."""

from __future__ import annotations

import pytest

from img_agent.agent.qa import answer_question, parse_citations
from img_agent.testing.fake_engine import FakeEngine
from img_agent.testing.fake_llm import request_images, request_text


QUESTION = "What colour is the car?"


@pytest.mark.parametrize(
    ("answer", "count", "expected"),
    [
        ("It is red [2], see also [1].", 3, [2, 1]),
        ("Red [1][3] and again [1].", 3, [1, 3]),
        ("Both [2, 3] and [4，1]", 4, [2, 3, 4, 1]),
        ("Outside [9] and [0].", 3, []),
        ("No citations.", 3, []),
    ],
)
def test_parse_citations(answer, count, expected):
    assert parse_citations(answer, count) == expected


def test_answer_with_thumbnails_and_citations(llm, fake_llm):
    engine = FakeEngine()
    fake_llm.reply('["red car on a street", "sports car"]')  # expansion
    fake_llm.reply("The car is red [2], as also seen in [1].")
    result = answer_question(engine, llm, QUESTION, k=5, max_images=3)
    assert result.answer == "The car is red [2], as also seen in [1]."
    assert result.llm_used is True
    assert result.images_sent == 3
    assert result.searched_queries == [QUESTION, "red car on a street", "sports car"]
    assert [s.label for s in result.sources] == [1, 2, 3, 4, 5]
    assert result.cited_ids == [result.sources[1].id, result.sources[0].id]
    assert [s.cited for s in result.sources] == [True, True, False, False, False]
    assert [s.thumbnail_sent for s in result.sources] == [True, True, True, False, False]
    qa_request = fake_llm.requests[1]
    assert len(request_images(qa_request)) == 3
    assert QUESTION in request_text(qa_request)
    assert "Retrieved images (5)" in request_text(qa_request)


def test_answer_without_image_support(llm, fake_llm):
    engine = FakeEngine()
    fake_llm.refuse_images = True
    fake_llm.reply("From the file names only: probably red [1].")
    result = answer_question(engine, llm, QUESTION, k=3, expand=False)
    assert result.answer.startswith("From the file names")
    assert result.images_sent == 0
    assert not any(s.thumbnail_sent for s in result.sources)
    assert result.cited_ids == [result.sources[0].id]
    assert any("refused images" in n for n in result.notes)
    assert [len(request_images(r)) for r in fake_llm.requests] == [3, 0]


def test_thumbnail_gap_sends_only_the_prefix(llm, fake_llm):
    engine = FakeEngine(broken_thumbnails={2})
    fake_llm.reply("Red [1].")
    result = answer_question(engine, llm, QUESTION, k=4, expand=False, max_images=3)
    assert result.images_sent == 1
    assert [s.thumbnail_sent for s in result.sources] == [True, False, False, False]


def test_no_llm_returns_the_images():
    engine = FakeEngine()
    result = answer_question(engine, None, QUESTION, k=3)
    assert result.answer is None
    assert result.llm_used is False
    assert len(result.sources) == 3
    assert "No LLM configured" in result.notes[0]


def test_llm_failure_returns_the_images_with_a_note(make_llm, fake_llm):
    client = make_llm(timeout=0.5, max_retries=0)
    fake_llm.slow(1.0)
    result = answer_question(FakeEngine(), client, QUESTION, k=2, expand=False)
    assert result.answer is None
    assert len(result.sources) == 2
    assert "Answering failed" in result.notes[-1]


def test_empty_index(llm, fake_llm):
    result = answer_question(FakeEngine(default=[]), llm, QUESTION, k=3, expand=False)
    assert result.answer is None and result.sources == []
    assert "No images are indexed" in result.notes[0]
    assert fake_llm.requests == []
