"""Index strings: the one a rebuild chooses is kept by the store, and every index reports exact cosines."""

from __future__ import annotations

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import InvalidInputError
from img_agent.index import faiss_plan
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder, clip_like_vectors

DIM = 32



def open_engine(tmp_path, **overrides) -> Engine:
    settings = Settings(data_dir=tmp_path / "data", model="stub", **{"merge_threshold": 10**6, **overrides})
    return Engine.open(settings, encoder=StubEncoder(DIM))


def paths(n, start=0):
    return [f"/virtual/img_{i:06d}.jpg" for i in range(start, start + n)]


def oracle(x: np.ndarray, q: np.ndarray, k: int):
    scores = x @ q
    order = np.lexsort((np.arange(len(x)), -scores))[:k]
    return order, scores[order]


def test_rebuild_choice_is_kept_by_status_maintenance_and_reopening(tmp_path):
    x = clip_like_vectors(4000, DIM, seed=21, clusters=20)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x[:3000], paths(3000))
        assert eng.rebuild(index_string="IVF16,Flat").index == "IVF16,Flat"
        st = eng.status()
        assert (st.index, st.index_string) == ("IVF16,Flat", "IVF16,Flat")
        assert not st.rebuild_advised and not any("advised" in h for h in st.hints)
        eng.add_vectors(x[3000:], paths(1000, 3000))
        reports = eng.maintain()
        assert all(r.operation != "rebuild" for r in reports)
        assert eng.status().index == "IVF16,Flat"
    with open_engine(tmp_path) as eng:  # the choice lives in the store, not in the settings
        st = eng.status()
        assert (st.index, st.index_string) == ("IVF16,Flat", "IVF16,Flat")
        assert eng.rebuild(index_string="IVF32,SQ8").index == "IVF32,SQ8"  # another explicit choice replaces it
        assert eng.status().index_string == "IVF32,SQ8"
        eng.rebuild()  # without a string the choice stays
        assert (eng.status().index, eng.status().index_string) == ("IVF32,SQ8", "IVF32,SQ8")
        assert eng.rebuild(index_string="auto").index == "Flat"  # back to the size rule
        st = eng.status()
        assert (st.index, st.index_string) == ("Flat", "auto") and not st.rebuild_advised


def test_choice_too_large_to_train_is_kept_and_served_exactly(tmp_path):
    x = clip_like_vectors(3000, DIM, seed=22, clusters=20)
    need = faiss_plan.MIN_POINTS_PER_CENTROID * 64
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x[:200], paths(200))
        assert eng.rebuild(index_string="IVF64,Flat").index == "Flat"
        st = eng.status()
        assert (st.index, st.index_string) == ("Flat", "IVF64,Flat")
        assert any("IVF64,Flat" in h and f"{need:,}" in h and "chosen" in h for h in st.hints)
        hits = eng.search_vectors(x[7][None], 5)[0]
        ref_ids, ref_scores = oracle(x[:200], x[7], 5)
        assert [h.id for h in hits] == ref_ids.tolist()
        np.testing.assert_allclose([h.score for h in hits], ref_scores, atol=1e-5)
        eng.add_vectors(x[200:], paths(2800, 200))  # now large enough: maintenance trains the choice
        reports = eng.maintain()
        assert [r.operation for r in reports] == ["rebuild"]
        st = eng.status()
        assert (st.index, st.index_string, st.trained) == ("IVF64,Flat", "IVF64,Flat", True)


@pytest.mark.parametrize("factory", ["PCA16,IVF64,Flat", "PCA16,Flat", "PCAR16,HNSW32", "PCA16,IVF16,SQ8",
                                     "IVF16,SQ8", "SQ8", "HNSW16,SQ8"])
def test_transformed_and_compressed_indexes_report_exact_cosines(tmp_path, factory):
    x = clip_like_vectors(5000, DIM, seed=23, clusters=40)
    q = clip_like_vectors(40, DIM, seed=24, clusters=40)
    assert not faiss_plan.plan_of(factory, DIM).exact_scores
    with open_engine(tmp_path, index_string=factory) as eng:
        eng.add_vectors(x, paths(len(x)))
        assert eng.merge().index == factory
        for qi, hits in zip(q, eng.search_vectors(q, 10)):
            ids = np.array([h.id for h in hits])
            scores = np.array([h.score for h in hits])
            np.testing.assert_allclose(scores, x[ids] @ qi, atol=1e-5)
            assert np.all(np.diff(scores) <= 1e-6)
            _, ref_scores = oracle(x, qi, 10)
            assert scores[0] <= ref_scores[0] + 1e-5


@pytest.mark.parametrize("factory,exact", [("Flat", True), ("HNSW32", True), ("HNSW32,Flat", True),
                                           ("IVF64,Flat", True), ("IVF64_HNSW32,Flat", True),
                                           ("PCA16,IVF64,Flat", False), ("OPQ8,IVF64,Flat", False),
                                           ("PCA16,Flat", False), ("IVF64,SQ8", False), ("IVF64,PQ8", False),
                                           ("HNSW32,SQ8", False), ("SQfp16", False)])
def test_exact_scores_only_for_untransformed_full_vectors(factory, exact):
    assert faiss_plan.IndexPlan(factory).exact_scores is exact


@pytest.mark.parametrize("factory", ["IDMap,Flat", "IDMap2,Flat", "IDMap2,IVF16,Flat", "PQ8x4", "PCA16,PQ8x4",
                                     "ITQ,Flat", "LSH", "IVF16,Flat,Refine(Flat)"])
def test_unusable_index_strings_are_refused_clearly(tmp_path, factory):
    x = clip_like_vectors(3000, DIM, seed=25)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x, paths(len(x)))
        eng.merge()
        with pytest.raises(InvalidInputError, match="Accepted:"):
            eng.rebuild(index_string=factory)
        st = eng.status()
        assert (st.index, st.index_string, st.generation) == ("Flat", "auto", 1)
        assert eng.search_vectors(x[3][None], 1)[0][0].id == 3
