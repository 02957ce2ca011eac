"""Engine behaviour on precomputed vectors, checked against an exact brute-force oracle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import (
    BusyError,
    InvalidInputError,
    ModelMismatchError,
    NotFoundError,
    StoreError,
    StoreVersionError,
)
from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing import StubEncoder, clip_like_vectors

DIM = 32



def open_engine(tmp_path, **overrides) -> Engine:
    settings = Settings(data_dir=tmp_path / "data", model="stub", **overrides)
    return Engine.open(settings, encoder=StubEncoder(DIM))


def oracle(vectors: np.ndarray, live: np.ndarray, q: np.ndarray, k: int):
    """Exact top-k ids and scores over live rows (ids = row numbers)."""
    ids = np.flatnonzero(live)
    scores = vectors[ids] @ q
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def recall_with_ties(got_ids, got_scores, ref_ids, ref_scores, tol=1e-5) -> float:
    """Set recall where a result tied with the k-th reference score counts as correct."""
    if not len(ref_ids):
        return 1.0
    kth = ref_scores[-1]
    ref = set(ref_ids.tolist())
    ok = sum(1 for i, s in zip(got_ids, got_scores) if i in ref or s >= kth - tol)
    return min(ok, len(ref_ids)) / len(ref_ids)


def paths(n, start=0):
    return [f"/virtual/img_{i:06d}.jpg" for i in range(start, start + n)]


def test_empty_index_returns_nothing(tmp_path):
    with open_engine(tmp_path) as eng:
        assert eng.search_vectors(np.ones((1, DIM), np.float32), 5) == [[]]
        st = eng.status()
        assert (st.live, st.main, st.buffer, st.deleted) == (0, 0, 0, 0)


def test_buffer_search_is_exact_and_scores_are_cosine(tmp_path):
    x = clip_like_vectors(300, DIM, seed=1)
    with open_engine(tmp_path) as eng:
        ids = eng.add_vectors(x, paths(300))
        assert ids == list(range(300))
        q = clip_like_vectors(5, DIM, seed=2)
        for qi, hits in zip(q, eng.search_vectors(q, 10)):
            ref_ids, ref_scores = oracle(x, np.ones(300, bool), qi, 10)
            assert [h.id for h in hits] == ref_ids.tolist()
            np.testing.assert_allclose([h.score for h in hits], ref_scores, atol=1e-5)
            assert [h.rank for h in hits] == list(range(1, 11))
            assert hits[0].path == f"/virtual/img_{hits[0].id:06d}.jpg"
        assert eng.status().buffer == 300


def test_main_and_buffer_merge_on_one_scale(tmp_path):
    x = clip_like_vectors(600, DIM, seed=3)
    with open_engine(tmp_path, merge_threshold=10_000) as eng:
        eng.add_vectors(x[:400], paths(400))
        rep = eng.merge()
        assert rep.moved == 400 and rep.generation == 1 and rep.index == "Flat" and rep.saved
        eng.add_vectors(x[400:], paths(200, 400))
        st = eng.status()
        assert (st.main, st.buffer) == (400, 200)
        q = clip_like_vectors(8, DIM, seed=4)
        for qi, hits in zip(q, eng.search_vectors(q, 25)):
            ref_ids, _ = oracle(x, np.ones(600, bool), qi, 25)
            assert [h.id for h in hits] == ref_ids.tolist()


def test_auto_merge_past_threshold(tmp_path):
    x = clip_like_vectors(120, DIM, seed=5)
    with open_engine(tmp_path, merge_threshold=50) as eng:
        eng.add_vectors(x[:40], paths(40))
        assert eng.status().buffer == 40
        eng.add_vectors(x[40:60], paths(20, 40))
        st = eng.status()
        assert (st.main, st.buffer, st.generation) == (60, 0, 1)
        assert st.last_merge is not None


def test_merge_does_not_retrain_ivf(tmp_path):
    import faiss

    x = clip_like_vectors(3000, DIM, seed=6)
    with open_engine(tmp_path, index_string="IVF16,PQ8x4", merge_threshold=100_000, nprobe=16) as eng:
        eng.add_vectors(x[:2500], paths(2500))
        first = eng.merge()
        assert first.retrained and first.index == "IVF16,PQ8x4"
        ivf = faiss.extract_index_ivf(eng.main_index)
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist).copy()
        codebook = faiss.vector_to_array(faiss.downcast_index(eng.main_index).pq.centroids).copy()
        eng.add_vectors(x[2500:], paths(500, 2500))
        rep = eng.merge()
        assert rep.moved == 500 and not rep.retrained
        assert rep.generation == 1 and not rep.saved  # merges write the index file only now and then
        assert eng.main_index.ntotal == 2500 and eng.status().segments == 1  # merged as a segment, nothing copied
        assert eng.checkpoint() and eng.status().segments == 0  # compaction folds the segment in
        main = eng.main_index
        assert main.ntotal == 3000
        ivf2 = faiss.extract_index_ivf(main)
        np.testing.assert_array_equal(ivf2.quantizer.reconstruct_n(0, ivf2.nlist), centroids)
        np.testing.assert_array_equal(faiss.vector_to_array(faiss.downcast_index(main).pq.centroids), codebook)
        # all lists probed: compressed-domain candidates + exact re-rank recover the exact answer
        q = x[::300] + np.random.default_rng(7).normal(0, 0.05, (10, DIM)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        for qi, hits in zip(q, eng.search_vectors(q, 10)):
            ref_ids, ref_scores = oracle(x, np.ones(3000, bool), qi, 10)
            got = np.array([h.id for h in hits])
            assert recall_with_ties(got, np.array([h.score for h in hits]), ref_ids, ref_scores) >= 0.9


def test_ivf_recall_against_oracle(tmp_path):
    x = clip_like_vectors(20_000, DIM, seed=8, clusters=64)
    with open_engine(tmp_path, index_string="IVF64,SQ8", nprobe=8, merge_threshold=10**6) as eng:
        eng.add_vectors(x, paths(len(x)))
        eng.merge()
        assert eng.status().nprobe == 8
        q = clip_like_vectors(50, DIM, seed=9, clusters=64)
        recalls = []
        for qi, hits in zip(q, eng.search_vectors(q, 10)):
            ref_ids, ref_scores = oracle(x, np.ones(len(x), bool), qi, 10)
            recalls.append(recall_with_ties(np.array([h.id for h in hits]), np.array([h.score for h in hits]), ref_ids, ref_scores))
            # scores are exact cosines after re-ranking
            np.testing.assert_allclose([h.score for h in hits], x[[h.id for h in hits]] @ qi, atol=1e-5)
        assert np.mean(recalls) >= 0.9


def test_removed_ids_are_filtered_inside_search_and_k_stays_full(tmp_path):
    x = clip_like_vectors(5000, DIM, seed=10, clusters=20)
    live = np.ones(len(x), bool)
    with open_engine(tmp_path, index_string="IVF32,Flat", nprobe=2, merge_threshold=10**6) as eng:
        eng.add_vectors(x, paths(len(x)))
        eng.merge()
        q = x[17]
        before = [h.id for h in eng.search_vectors(q[None], 50)[0]]
        rep = eng.remove(ids=before[:40])
        assert sorted(rep.removed) == sorted(before[:40])
        live[before[:40]] = False
        hits = eng.search_vectors(q[None], 50)[0]
        assert len(hits) == 50
        assert not set(h.id for h in hits) & set(before[:40])
        # remove almost everything: the probed lists run dry, yet k live results come back
        doomed = np.flatnonzero(live)[:-30]
        eng.remove(ids=doomed.tolist())
        live[doomed] = False
        hits = eng.search_vectors(q[None], 50)[0]
        assert sorted(h.id for h in hits) == sorted(np.flatnonzero(live).tolist())
        st = eng.status()
        assert st.live == 30 and st.deleted == 4970
        assert any("rebuild advised" in h for h in st.hints)


def test_remove_by_path_and_folder_and_unknown(tmp_path):
    x = clip_like_vectors(10, DIM, seed=11)
    p = paths(8) + ["/other/a.jpg", "/other/b.jpg"]
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x, p)
        rep = eng.remove(ids=[0, 999], paths=["/virtual/img_000001.jpg", "/nope.jpg"])
        assert sorted(rep.removed) == [0, 1]
        assert rep.not_found == ["999", "/nope.jpg"]
        rep = eng.remove(paths=["/other"])
        assert sorted(rep.removed) == [8, 9]
        again = eng.remove(ids=[0])  # idempotent: an id removed before is reported, not an error
        assert again.removed == [] and again.already_removed == [0]
        with pytest.raises(NotFoundError, match="No live image matched"):
            eng.remove(ids=[12345])
        with pytest.raises(InvalidInputError):
            eng.remove(ids=["x"])
        assert eng.status().live == 6


def test_rebuild_drops_deleted_keeps_ids_and_trains(tmp_path):
    x = clip_like_vectors(4000, DIM, seed=12, clusters=30)
    with open_engine(tmp_path, merge_threshold=10**6, index_string="IVF32,SQ8") as eng:
        eng.add_vectors(x, paths(len(x)))
        eng.merge()
        eng.remove(ids=list(range(0, 4000, 2)))
        eng.add_vectors(clip_like_vectors(10, DIM, seed=13), paths(10, 4000))
        rep = eng.rebuild()
        assert rep.operation == "rebuild" and rep.retrained
        assert rep.moved == 2010 and rep.dropped == 2000
        st = eng.status()
        assert (st.live, st.main, st.buffer, st.deleted) == (2010, 2010, 0, 0)
        assert eng.main_index.ntotal == 2010
        hits = eng.search_vectors(x[1][None], 1)[0]
        assert hits[0].id == 1 and hits[0].path == "/virtual/img_000001.jpg"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_small_collection_falls_back_from_untrainable_index_string(tmp_path):
    x = clip_like_vectors(200, DIM, seed=14)
    with open_engine(tmp_path, index_string="IVF4096,PQ32x8", merge_threshold=100) as eng:
        eng.add_vectors(x, paths(200))
        st = eng.status()
        assert st.index == "Flat" and st.main == 200
        assert any("needs at least" in h for h in st.hints)
        assert eng.search_vectors(x[5][None], 1)[0][0].id == 5


def test_auto_index_choice_and_rebuild_hint(tmp_path, monkeypatch):
    from img_agent.index import faiss_plan as ann

    monkeypatch.setattr(ann, "AUTO_RULES", ((1000, "Flat"), (float("inf"), "IVF64,SQ8")))
    x = clip_like_vectors(4000, DIM, seed=15)
    with open_engine(tmp_path, merge_threshold=500) as eng:
        eng.add_vectors(x[:500], paths(500))
        assert eng.status().index == "Flat"
        eng.add_vectors(x[500:], paths(3500, 500))
        st = eng.status()
        assert st.index == "Flat" and any("served better by IVF64,SQ8" in h for h in st.hints)
        reports = eng.maintain()
        assert [r.operation for r in reports] == ["rebuild"]
        st = eng.status()
        assert st.index == "IVF64,SQ8" and st.nlist == 64 and st.trained
        # the search setting was measured on held-out queries after training, and status says so
        assert 1 <= st.nprobe <= 64 and st.tuned_recall >= st.recall_target == 0.99
        assert st.tuning.startswith(f"nprobe {st.nprobe}, re-rank ")
        assert not any("advised" in h for h in st.hints)


def test_filters_are_applied_within_search(tmp_path):
    x = clip_like_vectors(3000, DIM, seed=16)
    p = [f"/a/{i}.jpg" if i % 3 else f"/b/{i}.png" for i in range(3000)]
    with open_engine(tmp_path, index_string="IVF16,Flat", nprobe=1, merge_threshold=10**6) as eng:
        eng.add_vectors(x, p)
        eng.merge()
        q = x[1]
        mask = np.array([path.startswith("/b/") for path in p])
        hits = eng.search_vectors(q[None], 20, SearchFilter(folder="/b"))[0]
        ref_ids, _ = oracle(x, mask, q, 20)
        assert [h.id for h in hits] == ref_ids.tolist()
        hits = eng.search_vectors(q[None], 5, SearchFilter(glob="*.png"))[0]
        assert all(h.path.endswith(".png") for h in hits) and len(hits) == 5
        assert eng.search_vectors(q[None], 5, SearchFilter(folder="/nowhere/"))[0] == []


def test_search_similar_excludes_itself(tmp_path):
    x = clip_like_vectors(100, DIM, seed=17)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x, paths(100))
        hits = eng.search_similar(7, 5)
        assert 7 not in [h.id for h in hits] and len(hits) == 5
        ref_ids, _ = oracle(x, np.arange(100) != 7, x[7], 5)
        assert [h.id for h in hits] == ref_ids.tolist()
        with pytest.raises(NotFoundError):
            eng.search_similar(1000)


@pytest.mark.parametrize("k", [0, -1, 1001, 2.5, "3", True])
def test_invalid_k(tmp_path, k):
    with open_engine(tmp_path) as eng:
        with pytest.raises(InvalidInputError, match="k must be"):
            eng.search_vectors(np.ones((1, DIM)), k)


def test_bad_vectors_are_refused(tmp_path):
    with open_engine(tmp_path) as eng:
        eng.add_vectors(clip_like_vectors(3, DIM), paths(3))
        with pytest.raises(InvalidInputError, match="dimension|-d"):
            eng.add_vectors(np.ones((2, DIM + 1)), paths(2, 10))
        with pytest.raises(InvalidInputError, match="zero"):
            eng.add_vectors(np.zeros((1, DIM)), paths(1, 20))
        with pytest.raises(InvalidInputError, match="NaN"):
            eng.search_vectors(np.full((1, DIM), np.nan))
        with pytest.raises(InvalidInputError, match="one row per path"):
            eng.add_vectors(np.ones((2, DIM)), paths(3, 30))
        with pytest.raises(NotFoundError):
            eng.get([0, 55])
        assert eng.status().live == 3


def test_reopen_restores_main_buffer_and_deletions(tmp_path):
    x = clip_like_vectors(700, DIM, seed=18)
    with open_engine(tmp_path, merge_threshold=10**6) as eng:
        eng.add_vectors(x[:500], paths(500))
        eng.merge()
        eng.add_vectors(x[500:], paths(200, 500))
        eng.remove(ids=[3, 600])
        q = clip_like_vectors(3, DIM, seed=19)
        before = [[(h.id, h.score) for h in hits] for hits in eng.search_vectors(q, 30)]
        st0 = eng.status()
    with open_engine(tmp_path, merge_threshold=10**6) as eng:
        after = [[(h.id, h.score) for h in hits] for hits in eng.search_vectors(q, 30)]
        assert after == before
        st = eng.status()
        assert (st.live, st.main, st.buffer, st.deleted, st.generation) == (st0.live, st0.main, st0.buffer, st0.deleted, 1)


def test_replacing_a_path_retires_the_old_id(tmp_path):
    with open_engine(tmp_path) as eng:
        eng.add_vectors(clip_like_vectors(2, DIM, seed=20), ["/x/a.jpg", "/x/b.jpg"])
        new = eng.add_vectors(clip_like_vectors(1, DIM, seed=21), ["/x/a.jpg"])
        assert new == [2]
        assert eng.status().live == 2
        with pytest.raises(NotFoundError):
            eng.get([0])


def test_second_process_lock_and_model_mismatch(tmp_path):
    eng = open_engine(tmp_path)
    eng.add_vectors(clip_like_vectors(2, DIM), paths(2))
    with pytest.raises(StoreError, match="in use by another img-agent process"):
        open_engine(tmp_path)
    eng.close()

    class Other(StubEncoder):
        name = "other"

    with pytest.raises(ModelMismatchError, match="--model stub"):
        Engine.open(Settings(data_dir=tmp_path / "data"), encoder=Other())


def test_newer_store_version_is_refused(tmp_path):
    open_engine(tmp_path).close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "data" / "catalog.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match="Upgrade img-agent"):
        open_engine(tmp_path)


def test_unreadable_index_file_is_recovered_from_vectors(tmp_path):
    x = clip_like_vectors(300, DIM, seed=22)
    with open_engine(tmp_path, merge_threshold=10**6) as eng:
        eng.add_vectors(x, paths(300))
        eng.merge()
    (tmp_path / "data" / "index" / "gen-000001.faiss").write_bytes(b"garbage")
    with open_engine(tmp_path, merge_threshold=10**6) as eng:  # rebuilt from the vectors at open
        st = eng.status()
        assert (st.live, st.main, st.buffer) == (300, 300, 0)
        assert any("unusable" in h and "rebuilt from the stored vectors" in h for h in st.hints)
        assert eng.search_vectors(x[9][None], 1)[0][0].id == 9


def test_concurrent_searches_during_adds_merges_rebuilds_and_removes(tmp_path):
    x = clip_like_vectors(6000, DIM, seed=23, clusters=40)
    errors: list[BaseException] = []
    removed: set[int] = set()
    with open_engine(tmp_path, merge_threshold=400, index_string="IVF16,SQ8") as eng:
        eng.add_vectors(x[:2000], paths(2000))
        stop = threading.Event()

        def searcher(seed):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    q = x[rng.integers(0, 2000)]
                    snapshot = set(removed)
                    hits = eng.search_vectors(q[None], 10)[0]
                    assert len(hits) == 10
                    assert not {h.id for h in hits} & snapshot, "a removed id came back"
                    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        try:
            for start in range(2000, 6000, 250):
                eng.add_vectors(x[start : start + 250], paths(250, start))
                victims = list(range(start - 2000, start - 2000 + 20))
                eng.remove(ids=victims)
                removed.update(victims)
                if start == 3000:
                    rb = threading.Thread(target=eng.rebuild)
                    rb.start()
            rb.join()
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]
        st = eng.status()
        assert st.live == 6000 - len(removed)
        all_ids = {h.id for h in eng.search_vectors(x[4500][None], 1000)[0]}
        assert not all_ids & removed


def test_maintenance_jobs_do_not_overlap(tmp_path):
    with open_engine(tmp_path) as eng:
        eng.add_vectors(clip_like_vectors(10, DIM), paths(10))
        with eng._state.maint_lock:  # as if a rebuild were running
            with pytest.raises(BusyError, match="already running"):
                eng.merge()
            with pytest.raises(BusyError):
                eng.rebuild()
            eng.add_vectors(clip_like_vectors(5, DIM, seed=1), paths(5, 10))  # adds still work
        assert eng.merge().moved == 15


def test_merges_between_checkpoints_survive_reopen_with_and_without_close(tmp_path):
    from img_agent.index import maintenance as maintenance_mod

    x = clip_like_vectors(900, DIM, seed=24)
    q = clip_like_vectors(4, DIM, seed=25)
    eng = open_engine(tmp_path, merge_threshold=10**6, index_string="IVF8,Flat", nprobe=8)
    eng.add_vectors(x[:400], paths(400))
    assert eng.merge().saved  # the first build is always written
    eng.add_vectors(x[400:700], paths(300, 400))
    rep = eng.merge()
    assert not rep.saved and eng.status().unsaved == 300
    eng.remove(ids=[450])
    before = [[h.id for h in hits] for hits in eng.search_vectors(q, 50)]
    # a crash: nothing written on the way out
    eng._opened.close()

    eng = open_engine(tmp_path, merge_threshold=10**6, index_string="IVF8,Flat", nprobe=8)
    st = eng.status()
    assert (st.live, st.main, st.buffer, st.unsaved, st.generation) == (699, 699, 0, 300, 1)
    assert eng.main_index.ntotal == 700
    assert [[h.id for h in hits] for hits in eng.search_vectors(q, 50)] == before
    eng.add_vectors(x[700:], paths(200, 700))
    eng.merge()
    eng.close()  # a clean close writes the pending merges
    with open_engine(tmp_path, merge_threshold=10**6, index_string="IVF8,Flat", nprobe=8) as eng:
        st = eng.status()
        assert (st.live, st.unsaved, st.generation) == (899, 0, 2)
        assert sorted(p.name for p in (tmp_path / "data" / "index").iterdir()) == ["gen-000002.faiss"]

    # enough unsaved rows make the merge start a compaction that writes the file (in the background)
    with open_engine(tmp_path, merge_threshold=10**6, index_string="IVF8,Flat") as eng:
        old = maintenance_mod.CHECKPOINT_MIN_ROWS
        maintenance_mod.CHECKPOINT_MIN_ROWS = 50
        try:
            eng.add_vectors(clip_like_vectors(60, DIM, seed=26), paths(60, 5000))
            rep = eng.merge()
            eng.wait_for_background(60)
        finally:
            maintenance_mod.CHECKPOINT_MIN_ROWS = old
        assert not rep.saved and rep.generation == 2  # the merge itself writes nothing
        st = eng.status()
        assert st.generation == 3 and st.unsaved == 0 and st.segments == 0


@pytest.mark.parametrize("stop_at", ["training", "adding"])
def test_a_cancelled_rebuild_keeps_the_old_index_and_changes_nothing(tmp_path, stop_at):
    """A cancel seen before the new index is published discards it: same generation, same results."""
    vecs = clip_like_vectors(3000, 32, seed=7)
    eng = open_engine(tmp_path, index_string="IVF16,Flat")
    try:
        eng.add_vectors(vecs, paths(3000))
        eng.merge()
        eng.remove(ids=list(range(0, 3000, 10)))
        before, q = eng.status(), vecs[:20]
        expected = eng.search_ids(q, 10)
        cancel, seen = threading.Event(), []

        def progress(done, total, message):
            seen.append(message)
            if message.startswith(stop_at):
                cancel.set()

        report = eng.rebuild(progress=progress, index_string="IVF32,Flat", cancel=cancel)
        assert report.cancelled and report.moved == 0 and report.generation == before.generation
        assert any(m.startswith(stop_at) for m in seen)
        after = eng.status()
        assert (after.generation, after.nlist, after.deleted) == (before.generation, before.nlist, before.deleted)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(eng.search_ids(q, 10), expected))
        done = eng.rebuild(index_string="IVF32,Flat")  # a later rebuild runs as usual
        assert not done.cancelled and eng.status().nlist == 32 and eng.status().deleted == 0
    finally:
        eng.close()
