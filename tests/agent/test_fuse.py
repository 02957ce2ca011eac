"""Fusion math checked by hand on known rankings."""

from __future__ import annotations

import math

import pytest

from img_agent.agent.fuse import fuse, reciprocal_rank_fusion, score_fusion
from img_agent.errors import InvalidInputError
from img_agent.testing.fake_engine import hit


def ranked(*pairs: tuple[str, list[tuple[int, float]]]):
    """``("query", [(id, score), ...])`` pairs -> the fusion input."""
    return [(query, [hit(i, s, rank=r) for r, (i, s) in enumerate(items, start=1)]) for query, items in pairs]


# A: 1, 2, 3      B: 3, 1, 4
LISTS = ranked(
    ("A", [(1, 0.30), (2, 0.28), (3, 0.25)]),
    ("B", [(3, 0.33), (1, 0.32), (4, 0.20)]),
)


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion(LISTS, k=60)
    # id1: 1/61 + 1/62 = 0.032522..., id3: 1/63 + 1/61 = 0.032266..., id2: 1/62, id4: 1/63
    assert [h.id for h in fused] == [1, 3, 2, 4]
    assert fused[0].fused_score == pytest.approx(1 / 61 + 1 / 62, abs=1e-15)
    assert fused[1].fused_score == pytest.approx(1 / 63 + 1 / 61, abs=1e-15)
    assert fused[2].fused_score == pytest.approx(1 / 62, abs=1e-15)
    assert fused[3].fused_score == pytest.approx(1 / 63, abs=1e-15)
    assert [h.rank for h in fused] == [1, 2, 3, 4]


def test_rrf_keeps_best_cosine_and_matched_queries():
    by_id = {h.id: h for h in reciprocal_rank_fusion(LISTS)}
    assert by_id[1].score == 0.32  # best of 0.30 (A) and 0.32 (B)
    assert by_id[3].score == 0.33
    assert by_id[1].matched_queries == ["A", "B"]
    assert by_id[3].query_ranks == {"A": 3, "B": 1}
    assert by_id[2].matched_queries == ["A"]
    assert by_id[4].matched_queries == ["B"]
    assert by_id[4].path == "/photos/img_004.jpg"  # the catalog record travels with the hit


def test_rrf_k_changes_the_order():
    # with k = 0: id1 = 1/1 + 1/2 = 1.5, id3 = 1/3 + 1/1 = 1.333, id2 = 1/2, id4 = 1/3
    fused = reciprocal_rank_fusion(LISTS, k=0)
    assert [h.id for h in fused] == [1, 3, 2, 4]
    assert [h.fused_score for h in fused] == pytest.approx([1.5, 4 / 3, 0.5, 1 / 3])
    # a list where consensus loses at small k but wins at large k:
    # X: 5, 6, 7     Y: 8, 9, 7     (7 is third in both)
    lists = ranked(("X", [(5, 0.3), (6, 0.29), (7, 0.28)]), ("Y", [(8, 0.31), (9, 0.3), (7, 0.27)]))
    small = [h.id for h in reciprocal_rank_fusion(lists, k=0)]
    large = [h.id for h in reciprocal_rank_fusion(lists, k=60)]
    assert small.index(7) > small.index(5)  # 2/3 = 0.667 < 1/1
    assert large[0] == 7  # 2/63 = 0.0317 > 1/61 = 0.0164


def test_rrf_does_not_depend_on_list_order():
    forward = reciprocal_rank_fusion(LISTS)
    backward = reciprocal_rank_fusion(list(reversed(LISTS)))
    assert [(h.id, h.fused_score) for h in forward] == [(h.id, h.fused_score) for h in backward]


def test_tie_breaking_is_deterministic():
    # P: 10, 11   Q: 11, 10  -> identical RRF sums for 10 and 11
    lists = ranked(("P", [(10, 0.25), (11, 0.24)]), ("Q", [(11, 0.26), (10, 0.20)]))
    fused = reciprocal_rank_fusion(lists)
    assert fused[0].fused_score == fused[1].fused_score
    assert [h.id for h in fused] == [11, 10]  # tie -> higher best cosine (0.26 > 0.25)
    # equal cosines too -> better best rank (both 1) -> lower id
    lists = ranked(("P", [(21, 0.25), (20, 0.24)]), ("Q", [(20, 0.25), (21, 0.24)]))
    assert [h.id for h in reciprocal_rank_fusion(lists)] == [20, 21]


def test_max_fusion_by_hand():
    fused = score_fusion(LISTS, how="max")
    assert [(h.id, h.fused_score) for h in fused] == [(3, 0.33), (1, 0.32), (2, 0.28), (4, 0.20)]
    assert fused[0].score == fused[0].fused_score


def test_mean_fusion_uses_the_list_floor_for_missing_images():
    # floors: A = 0.25, B = 0.20
    # id1: (0.30 + 0.32) / 2 = 0.31      id3: (0.25 + 0.33) / 2 = 0.29
    # id2: (0.28 + 0.20) / 2 = 0.24      id4: (0.25 + 0.20) / 2 = 0.225
    fused = score_fusion(LISTS, how="mean")
    assert [h.id for h in fused] == [1, 3, 2, 4]
    assert [h.fused_score for h in fused] == pytest.approx([0.31, 0.29, 0.24, 0.225])
    assert fused[1].score == 0.33  # score stays the best cosine


def test_single_list_keeps_its_order():
    single = ranked(("only", [(7, 0.4), (3, 0.35), (9, 0.35), (1, 0.1)]))
    for method in ("rrf", "max", "mean"):
        fused = fuse(single, method)
        assert [h.id for h in fused] == [7, 3, 9, 1], method
        assert [h.score for h in fused] == [0.4, 0.35, 0.35, 0.1]


def test_limit_and_empty_inputs():
    assert [h.id for h in fuse(LISTS, "rrf", limit=2)] == [1, 3]
    assert fuse([], "rrf") == []
    assert fuse([("A", []), ("B", [])], "mean") == []


def test_duplicate_id_within_one_list_counts_once():
    lists = ranked(("A", [(1, 0.3), (1, 0.2), (2, 0.1)]))
    fused = reciprocal_rank_fusion(lists)
    assert fused[0].fused_score == pytest.approx(1 / 61)
    assert fused[0].query_ranks == {"A": 1}


def test_repeated_query_text_is_listed_once():
    lists = ranked(("dog", [(1, 0.3)]), ("dog", [(1, 0.3)]))
    assert reciprocal_rank_fusion(lists)[0].matched_queries == ["dog"]


def test_fused_sums_are_exactly_rounded():
    lists = ranked(*[(f"q{i}", [(1, 0.3)]) for i in range(7)])
    assert reciprocal_rank_fusion(lists)[0].fused_score == math.fsum([1 / 61] * 7)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fuse(LISTS, "bogus"),  # type: ignore[arg-type]
        lambda: fuse(LISTS, "rrf", limit=0),
        lambda: reciprocal_rank_fusion(LISTS, k=-1),
        lambda: score_fusion(LISTS, how="median"),  # type: ignore[arg-type]
    ],
)
def test_invalid_parameters(call):
    with pytest.raises(InvalidInputError):
        call()
