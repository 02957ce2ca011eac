"""Query expansion: parsing of model answers, the original kept first, dedupe, Chinese, fallbacks."""

from __future__ import annotations

import pytest

from img_agent.agent.expand import (
    dedupe_queries,
    expand_query,
    expand_query_detailed,
    needs_english,
    parse_query_list,
)
from img_agent.errors import InvalidInputError
from img_agent.testing.fake_llm import request_text


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('["dog running on grass", "puppy playing outdoors"]', ["dog running on grass", "puppy playing outdoors"]),
        ('{"queries": ["a", "b"]}', ["a", "b"]),
        ('{"variants": ["a"]}', ["a"]),
        ('{"whatever": ["x", "y"]}', ["x", "y"]),
        ('[{"query": "a"}, {"text": "b"}]', ["a", "b"]),
        ('```json\n{"queries": ["dog on grass", "puppy outdoors"]}\n```', ["dog on grass", "puppy outdoors"]),
        ('```\n["dog on grass"]\n```', ["dog on grass"]),
        ('Here are the variants: {"queries": ["dog on grass"]} Enjoy!', ["dog on grass"]),
        ("Here are some variants:\n1. dog on grass\n2) puppy outdoors\n3: happy dog", ["dog on grass", "puppy outdoors", "happy dog"]),
        ("- dog on grass\n* puppy outdoors\n\u2022 happy dog", ["dog on grass", "puppy outdoors", "happy dog"]),
        ('1. "dog on grass"\n2. "puppy outdoors"', ["dog on grass", "puppy outdoors"]),
        ("dog on grass\npuppy outdoors", ["dog on grass", "puppy outdoors"]),
    ],
)
def test_parse_usable_answers(answer, expected):
    assert parse_query_list(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "I'm sorry, but I can't help with that.",
        '{"queries": ["dog on grass", "puppy',
        "Variants:",
        '{"queries": []}',
        '{"a": ["x"], "b": ["y"]}',
        "This answer is a long paragraph of prose that goes on and on about dogs and parks and grass and sunshine.\n"
        "And here is another very long line of prose that keeps going on with many words and no list at all here.",
    ],
)
def test_parse_unusable_answers(answer):
    assert parse_query_list(answer) is None


def test_dedupe_ignores_case_and_spacing():
    assert dedupe_queries(["A dog", "a  DOG", " a dog. ", "cat", ""]) == ["A dog", "cat"]


def test_needs_english():
    assert needs_english("公园里玩耍的狗")
    assert needs_english("собака в парке")
    assert not needs_english("a dog in the park")
    assert not needs_english("café au lait 2024")


def test_expansion_keeps_original_first_and_drops_duplicates(llm, fake_llm):
    fake_llm.reply('{"queries": ["A DOG PLAYING IN THE PARK", "dog running on grass", "puppy playing outdoors", "dog running on grass"]}')
    result = expand_query_detailed(llm, "a dog playing in the park", 3)
    assert result.queries == ["a dog playing in the park", "dog running on grass", "puppy playing outdoors"]
    assert result.llm_used is True
    assert result.notes == []
    sent = request_text(fake_llm.requests[0])
    assert "a dog playing in the park" in sent
    assert "Write 3 English search variants" in sent
    assert "not written in English" not in sent


def test_expansion_caps_the_number_of_variants(llm, fake_llm):
    fake_llm.reply('["v1", "v2", "v3", "v4", "v5"]')
    assert expand_query(llm, "q", 2) == ["q", "v1", "v2"]


def test_fenced_answer(llm, fake_llm):
    fake_llm.reply('Sure!\n```json\n{"queries": ["sunset over the sea", "beach at dusk"]}\n```')
    assert expand_query(llm, "sunset beach", 3) == ["sunset beach", "sunset over the sea", "beach at dusk"]


def test_malformed_answer_falls_back_to_the_original(llm, fake_llm):
    fake_llm.reply('{"queries": ["sunset over the sea", "beach')
    result = expand_query_detailed(llm, "sunset beach", 3)
    assert result.queries == ["sunset beach"]
    assert result.llm_used is False
    assert "no usable list" in result.notes[0]


def test_only_duplicates_gives_a_note(llm, fake_llm):
    fake_llm.reply('["Sunset  Beach"]')
    result = expand_query_detailed(llm, "sunset beach", 3)
    assert result.queries == ["sunset beach"]
    assert "no new variants" in result.notes[0]


def test_chinese_query_asks_for_english_variants(llm, fake_llm):
    fake_llm.reply('["a dog playing in the park", "puppy running on grass", "公园里的小狗"]')
    result = expand_query_detailed(llm, "公园里玩耍的狗", 3)
    assert result.queries == ["公园里玩耍的狗", "a dog playing in the park", "puppy running on grass", "公园里的小狗"]
    assert result.notes == []
    assert "not written in English" in request_text(fake_llm.requests[0])


def test_chinese_query_without_english_variant_is_noted(llm, fake_llm):
    fake_llm.reply('["公园里的小狗", "草地上奔跑的狗"]')
    result = expand_query_detailed(llm, "公园里玩耍的狗", 3)
    assert len(result.queries) == 3
    assert any("no English variant" in note for note in result.notes)


def test_no_llm_means_no_expansion():
    result = expand_query_detailed(None, "  a   dog ", 3)
    assert result.queries == ["a dog"]
    assert result.llm_used is False
    assert "No LLM configured" in result.notes[0]


def test_zero_variants_makes_no_request(llm, fake_llm):
    assert expand_query(llm, "a dog", 0) == ["a dog"]
    assert fake_llm.requests == []


@pytest.mark.parametrize("script", ["500", "timeout", "refusal"])
def test_llm_failure_falls_back_with_a_note(make_llm, fake_llm, script):
    client = make_llm(timeout=0.5, max_retries=1)
    if script == "500":
        fake_llm.error(500)
        fake_llm.error(500)
    elif script == "timeout":
        fake_llm.slow(1.0)
        fake_llm.slow(1.0)
    else:
        fake_llm.reply(None, refusal="I can't help with that.")
    result = expand_query_detailed(client, "a dog", 3)
    assert result.queries == ["a dog"]
    assert result.llm_used is False
    assert result.notes[0].startswith("Query expansion failed:")


@pytest.mark.parametrize(("query", "n"), [("", 3), ("   ", 3), ("dog", -1), ("dog", 11)])
def test_invalid_input(llm, query, n):
    with pytest.raises(InvalidInputError):
        expand_query_detailed(llm, query, n)
