"""RAG search: the response shape, expansion + fusion + explanation, and every fallback."""

from __future__ import annotations

import json
import time

import pytest

from img_agent.agent.rag import NO_LLM_NOTE, rag_search
from img_agent.errors import InvalidInputError
from img_agent.results import SearchFilter
from img_agent.testing.fake_engine import FakeEngine

QUERY = "a dog playing in the park"
V1, V2 = "dog running on grass", "puppy playing outdoors"

RANKINGS = {
    QUERY: [(1, 0.30), (2, 0.28), (3, 0.25)],
    V1: [(3, 0.33), (1, 0.32), (4, 0.20)],
    V2: [(3, 0.31), (5, 0.29)],
}


def test_response_shape_with_expansion_fusion_and_explanation(llm, fake_llm):
    engine = FakeEngine(RANKINGS)
    fake_llm.reply(json.dumps({"queries": [V1, V2]}))
    fake_llm.reply("Image 3 matches all three queries.")
    result = rag_search(engine, llm, QUERY, k=4, variants=2)

    data = json.loads(result.model_dump_json())
    for key in ("original_query", "expanded_queries", "results", "ai_explanation", "total_results"):
        assert key in data
    assert data["original_query"] == QUERY
    assert data["expanded_queries"] == [QUERY, V1, V2]
    assert data["ai_explanation"] == "Image 3 matches all three queries."
    assert data["total_results"] == 4
    assert {"path", "score", "matched_queries"} <= set(data["results"][0])
    assert result.llm_used is True
    assert result.notes == []

    # RRF by hand: id3 = 1/63 + 1/61 + 1/61, id1 = 1/61 + 1/62, id2 = 1/62, id5 = 1/62, id4 = 1/63
    # id2 and id5 tie at 1/62: best cosine 0.29 (id5) beats 0.28 (id2)
    assert [h.id for h in result.results] == [3, 1, 5, 2]
    assert result.results[0].fused_score == pytest.approx(1 / 63 + 2 / 61)
    assert result.results[0].score == 0.33
    assert result.results[0].matched_queries == [QUERY, V1, V2]

    # all variants encoded in one batch, one search call, 2k deep
    assert engine.searches == [([QUERY, V1, V2], 8)]
    # the explanation saw the fused results and the queries
    explain_text = fake_llm.requests[1]["messages"][1]["content"][0]["text"]
    assert '[1] "/photos/img_003.jpg"' in explain_text and json.dumps(V2) in explain_text


def test_no_llm_is_plain_retrieval(fake_engine):
    result = rag_search(fake_engine, None, "  red   car ", k=3)
    assert result.original_query == "  red   car "
    assert result.expanded_queries == ["red car"]
    assert result.ai_explanation is None
    assert result.llm_used is False
    assert result.notes == [NO_LLM_NOTE]
    assert [h.id for h in result.results] == [1, 2, 3]
    assert [h.score for h in result.results] == pytest.approx([0.29, 0.28, 0.27])
    assert fake_engine.searches == [(["red car"], 3)]


def test_plain_retrieval_matches_the_engine_order_for_any_fusion(fake_engine):
    for method in ("rrf", "max", "mean"):
        result = rag_search(fake_engine, None, "car", k=8, fusion=method, expand=False, explain=False)
        assert [h.id for h in result.results] == list(range(1, 9))
        assert result.notes == []


def test_expansion_unusable_but_explanation_works(llm, fake_llm):
    engine = FakeEngine(RANKINGS)
    fake_llm.reply("Sorry, I cannot do that.")
    fake_llm.reply("Top result is a dog.")
    result = rag_search(engine, llm, QUERY, k=3)
    assert result.expanded_queries == [QUERY]
    assert [h.id for h in result.results] == [1, 2, 3]
    assert result.ai_explanation == "Top result is a dog."
    assert result.llm_used is True
    assert any("Query expansion failed" in n for n in result.notes)


def test_llm_down_falls_back_to_plain_retrieval_quickly(make_llm, fake_llm):
    client = make_llm(timeout=0.5, max_retries=0)
    engine = FakeEngine(RANKINGS)
    fake_llm.slow(1.0)
    fake_llm.slow(1.0)
    started = time.monotonic()
    result = rag_search(engine, client, QUERY, k=3)
    assert time.monotonic() - started < 2 * client.max_call_seconds + 1.5  # slack for a loaded machine
    assert [h.id for h in result.results] == [1, 2, 3]
    assert result.ai_explanation is None
    assert result.llm_used is False
    assert [n.split(":")[0] for n in result.notes] == ["Query expansion failed", "Explanation failed"]


def test_max_fusion_and_no_explanation(llm, fake_llm):
    engine = FakeEngine(RANKINGS)
    fake_llm.reply(json.dumps([V1, V2]))
    result = rag_search(engine, llm, QUERY, k=3, fusion="max", explain=False)
    assert [(h.id, h.score) for h in result.results] == [(3, 0.33), (1, 0.32), (5, 0.29)]
    assert result.fusion == "max"
    assert len(fake_llm.requests) == 1


def test_filter_is_passed_to_the_engine(fake_engine):
    result = rag_search(fake_engine, None, "x", k=5, filter=SearchFilter(glob="*/IMG_00[246].jpg"), explain=False)
    assert sorted(h.id for h in result.results) == [2, 4, 6]


@pytest.mark.parametrize("k", [0, 1001])
def test_bad_k(fake_engine, k):
    with pytest.raises(InvalidInputError):
        rag_search(fake_engine, None, "x", k=k)


def test_empty_query(fake_engine):
    with pytest.raises(InvalidInputError):
        rag_search(fake_engine, None, "   ")
