"""The engine's contract on every vector store (faiss, Milvus Lite), checked against an exact oracle.

Search, filters, add, remove, merge, rebuild, status and reopening keep one meaning whichever store
holds the vectors: scores are cosines on one scale, removed ids never come back, and k results come
back whenever k images match.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import ConfigError, InvalidInputError, NotFoundError, StoreError, VectorStoreError
from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing import StubEncoder, clip_like_vectors

DIM = 32


def open_engine(tmp_path, vector_store: str, **overrides) -> Engine:
    settings = Settings(data_dir=tmp_path / "data", model="stub", vector_store=vector_store, **overrides)
    return Engine.open(settings, encoder=StubEncoder(DIM))


def paths(n: int, start: int = 0) -> list[str]:
    return [f"/photos/{'even' if i % 2 == 0 else 'odd'}/img_{i:05d}.jpg" for i in range(start, start + n)]


def exact_top(x: np.ndarray, live: np.ndarray, q: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    ids = np.flatnonzero(live)
    scores = x[ids] @ q
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].tolist(), scores[order]


def test_search_add_remove_merge_on_one_scale(tmp_path, vector_store):
    x = clip_like_vectors(1200, DIM, seed=1)
    live = np.zeros(len(x), bool)
    with open_engine(tmp_path, vector_store, merge_threshold=10**6) as eng:
        assert eng.search_vectors(x[:1], 5) == [[]]
        assert eng.add_vectors(x[:800], paths(800)) == list(range(800))
        live[:800] = True
        eng.merge()
        eng.add_vectors(x[800:], paths(400, 800))  # after the merge: buffer (faiss) or growing segment (Milvus)
        live[800:] = True
        q = clip_like_vectors(4, DIM, seed=2)
        for qi, hits in zip(q, eng.search_vectors(q, 25), strict=True):
            ids, scores = exact_top(x, live, qi, 25)
            assert [h.id for h in hits] == ids
            np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)  # cosine, exactly
            assert [h.rank for h in hits] == list(range(1, 26))
        doomed = [h.id for h in eng.search_vectors(q[:1], 40)[0]][:30] + [5, 805]
        report = eng.remove(ids=doomed)
        assert sorted(report.removed) == sorted(set(doomed))
        live[doomed] = False
        hits = eng.search_vectors(q[:1], 40)[0]
        assert len(hits) == 40 and not {h.id for h in hits} & set(doomed)
        assert [h.id for h in hits] == exact_top(x, live, q[0], 40)[0]
        with pytest.raises(NotFoundError):
            eng.get([5])
        status = eng.status()
        assert status.live == int(live.sum()) and status.vector_store == vector_store


def test_k_results_whenever_k_match_even_after_heavy_removal(tmp_path, vector_store):
    x = clip_like_vectors(3000, DIM, seed=3, clusters=15)
    approximate = "IVF32,Flat" if vector_store == "faiss" else "IVF_FLAT"  # few lists probed: they run dry
    with open_engine(tmp_path, vector_store, nprobe=2) as eng:
        eng.add_vectors(x, paths(len(x)))
        assert eng.rebuild(index_string=approximate).retrained
        keep = np.arange(0, len(x), 97)
        eng.remove(ids=np.setdiff1d(np.arange(len(x)), keep).tolist())
        got = eng.search_vectors(x[:2], 50)
        for hits in got:
            assert sorted(h.id for h in hits) == keep.tolist()  # fewer than k live: every one of them
        narrow = SearchFilter(folder="/photos/odd")
        allowed = [int(i) for i in keep if i % 2]
        assert sorted(h.id for h in eng.search_vectors(x[:1], 50, narrow)[0]) == allowed


def test_rebuild_keeps_ids_and_results(tmp_path, vector_store):
    x = clip_like_vectors(2000, DIM, seed=4)
    with open_engine(tmp_path, vector_store) as eng:
        eng.add_vectors(x, paths(len(x)))
        eng.remove(ids=list(range(0, 2000, 3)))
        live = np.ones(len(x), bool)
        live[::3] = False
        q = clip_like_vectors(3, DIM, seed=5)
        before = [[h.id for h in hits] for hits in eng.search_vectors(q, 10)]
        report = eng.rebuild()
        assert report.operation == "rebuild" and eng.status().live == int(live.sum())
        after = [[h.id for h in hits] for hits in eng.search_vectors(q, 10)]
        assert after == before == [exact_top(x, live, qi, 10)[0] for qi in q]


def test_filters_tags_and_similar_follow_changes(tmp_path, vector_store):
    x = clip_like_vectors(300, DIM, seed=6)
    meta = [{"format": "PNG" if i % 3 == 0 else "JPEG", "tags": ["Beach"] if i % 5 == 0 else []} for i in range(300)]
    with open_engine(tmp_path, vector_store) as eng:
        eng.add_vectors(x, paths(300), metadata=meta)
        beach = eng.search_vectors(x[:1], 100, SearchFilter(tags_any=["beach"], formats=["png"]))[0]
        assert sorted(h.id for h in beach) == [i for i in range(300) if i % 15 == 0]
        eng.notes.edit_tags([1, 2], add=["Dog"])
        eng.notes.edit_tags([0], remove=["beach"])
        assert sorted(h.id for h in eng.search_vectors(x[:1], 10, SearchFilter(tags_all=["dog"]))[0]) == [1, 2]
        assert 0 not in {h.id for h in eng.search_vectors(x[:1], 100, SearchFilter(tags_any=["beach"]))[0]}
        eng.notes.set_description([7], "A red kite over the dunes")
        assert [h.id for h in eng.search_vectors(x[:1], 5, SearchFilter(description="RED KITE"))[0]] == [7]
        similar = eng.search_similar(4, 10)
        live = np.ones(300, bool)
        live[4] = False
        assert [h.id for h in similar] == exact_top(x, live, x[4], 10)[0]
        replaced = eng.add_vectors(clip_like_vectors(1, DIM, seed=7), [paths(300)[9]])  # same path: a new id
        assert replaced == [300] and 9 not in {h.id for h in eng.search_vectors(x[9:10], 5)[0]}
        with pytest.raises(InvalidInputError, match="folder must be an absolute path"):
            eng.search_vectors(x[:1], 5, SearchFilter(folder="relative"))


def test_reopen_restores_everything(tmp_path, vector_store):
    x = clip_like_vectors(500, DIM, seed=8)
    q = clip_like_vectors(3, DIM, seed=9)
    with open_engine(tmp_path, vector_store) as eng:
        eng.add_vectors(x, paths(500))
        eng.merge()
        eng.remove(ids=[3, 400])
        before = [[(h.id, round(h.score, 5)) for h in hits] for hits in eng.search_vectors(q, 20)]
    with Engine.open(Settings(data_dir=tmp_path / "data", model="stub"), encoder=StubEncoder(DIM)) as eng:
        assert eng.vector_store == vector_store  # the store keeps its vector store without being told
        after = [[(h.id, round(h.score, 5)) for h in hits] for hits in eng.search_vectors(q, 20)]
        assert after == before and eng.status().live == 498


def test_concurrent_searches_during_adds_and_removes(tmp_path, vector_store):
    x = clip_like_vectors(900, DIM, seed=10)
    errors: list[BaseException] = []
    removed: set[int] = set()
    with open_engine(tmp_path, vector_store) as eng:
        eng.add_vectors(x[:300], paths(300))
        stop = threading.Event()

        def searcher() -> None:
            try:
                while not stop.is_set():
                    gone = set(removed)
                    for hits in eng.search_vectors(x[:2], 10):
                        assert len(hits) == 10 and not {h.id for h in hits} & gone
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=searcher)
        thread.start()
        for start in range(300, 900, 100):
            eng.add_vectors(x[start : start + 100], paths(100, start))
            batch = list(range(start - 300, start - 280))
            eng.remove(ids=batch)
            removed.update(batch)
        stop.set()
        thread.join()
        assert not errors, errors[0]
        assert eng.status().live == 900 - len(removed)


def test_a_store_keeps_its_vector_store(tmp_path):
    with open_engine(tmp_path, "faiss") as eng:
        eng.add_vectors(clip_like_vectors(3, DIM), paths(3))
    with pytest.raises(StoreError, match="img-agent migrate --to"):
        open_engine(tmp_path, str(tmp_path / "milvus.db"))
    with pytest.raises(ConfigError, match="neither 'faiss' nor a Milvus URI"):
        open_engine(tmp_path, "postgres://x")


def test_a_milvus_collection_serves_one_store_only(tmp_path):
    uri = str(tmp_path / "shared.db")
    with open_engine(tmp_path / "a", uri) as eng:
        eng.add_vectors(clip_like_vectors(20, DIM), paths(20))
    settings = Settings(data_dir=tmp_path / "b" / "data", model="stub", vector_store=uri)
    with pytest.raises(VectorStoreError, match="written by another img-agent store.*IMG_AGENT_MILVUS_COLLECTION"):
        Engine.open(settings, encoder=StubEncoder(DIM))  # its ids 0, 1, ... would overwrite the first store's
    with open_engine(tmp_path / "a", uri) as eng:  # the first store's images are untouched
        assert eng.status().live == 20 and len(eng.search_vectors(clip_like_vectors(1, DIM), 20)[0]) == 20
    with Engine.open(settings.model_copy(update={"milvus_collection": "store_b"}), encoder=StubEncoder(DIM)) as other:
        other.add_vectors(clip_like_vectors(5, DIM, seed=2), paths(5))
        assert other.status().live == 5


def test_a_milvus_write_that_fails_is_kept_and_repeated(tmp_path, monkeypatch):
    x = clip_like_vectors(40, DIM, seed=11)
    with open_engine(tmp_path, str(tmp_path / "milvus.db")) as eng:
        eng.add_vectors(x[:30], paths(30))
        index = eng._state.external.index
        real_upsert, real_delete = index.upsert, index.delete

        def down(*args, **kwargs):
            raise VectorStoreError("Milvus at test could not store vectors (connection refused).")

        monkeypatch.setattr(index, "upsert", down)
        monkeypatch.setattr(index, "delete", down)
        with pytest.raises(VectorStoreError, match="committed in the catalog and reaches Milvus when it answers"):
            eng.notes.edit_tags([3, 4], add=["kite"])
        with pytest.raises(VectorStoreError):
            eng.add_vectors(x[30:], paths(10, 30))  # committed, not in Milvus yet
        with pytest.raises(VectorStoreError):
            eng.remove(ids=[5])
        assert any("missed changes" in hint for hint in eng.status().hints)
        monkeypatch.setattr(index, "upsert", real_upsert)
        monkeypatch.setattr(index, "delete", real_delete)  # Milvus answers again: the next search catches up
        kites = eng.search_vectors(x[:1], 10, SearchFilter(tags_any=["kite"]))[0]
        assert sorted(h.id for h in kites) == [3, 4]
        live = np.ones(40, bool)
        live[5] = False
        for qi, hits in zip(x[:3], eng.search_vectors(x[:3], 40), strict=True):
            assert [h.id for h in hits] == exact_top(x, live, qi, 40)[0]
        assert not eng.status().hints
