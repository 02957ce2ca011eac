"""Merges as segments beside the main index: search equals one index holding everything, removed ids never
come back, segments fold and compact without changing any result, reopening keeps everything, and searches
running meanwhile never fail."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.index import maintenance, segments
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder, clip_like_vectors

DIM = 32
N = 6000


def open_engine(tmp_path, **overrides) -> Engine:
    base = {"index_string": "IVF32,SQ8", "nprobe": 32, "merge_threshold": 10**9, **overrides}
    return Engine.open(Settings(data_dir=tmp_path / "data", model="stub", **base), encoder=StubEncoder(DIM))


def paths(n, start=0):
    return [f"/virtual/seg_{i:06d}.jpg" for i in range(start, start + n)]


def exact(x: np.ndarray, live: np.ndarray, q: np.ndarray, k: int):
    """Exact top-k (ids, scores) per query over the live rows, ties by smaller id."""
    ids = np.flatnonzero(live)
    out = []
    for qi in q:
        scores = x[ids] @ qi
        order = np.lexsort((ids, -scores))[:k]
        out.append((ids[order], scores[order]))
    return out


def check_exact(eng: Engine, x: np.ndarray, live: np.ndarray, q: np.ndarray, k: int = 20) -> list:
    """Every query's ids and scores equal the exact oracle (all lists probed; SQ8 candidates re-ranked exactly)."""
    got = eng.search_ids(q, k)
    for (ids, scores), (ref_ids, ref_scores) in zip(got, exact(x, live, q, k), strict=True):
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        assert set(ids.tolist()) == set(ref_ids.tolist()) or np.allclose(np.sort(scores), np.sort(ref_scores), atol=1e-6)
        assert live[ids].all()
    return got


def assert_same_answers(before: list, after: list) -> None:
    """The same ids in the same order, with the same scores, for every query."""
    for (a, sa), (b, sb) in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, atol=1e-6)


@pytest.fixture()
def data():
    x = clip_like_vectors(N, DIM, seed=21, clusters=24)
    q = x[::400] + np.random.default_rng(3).normal(0, 0.08, (N // 400, DIM)).astype(np.float32)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def test_merges_become_segments_searched_as_one_index(tmp_path, data):
    x, q = data
    live = np.zeros(N, bool)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x[:3000], paths(3000))
        eng.merge()  # the first merge trains the main index
        live[:3000] = True
        main = eng.main_index
        for start in range(3000, 5000, 500):  # four merges: four segments, the main index untouched
            eng.add_vectors(x[start : start + 500], paths(500, start))
            eng.merge()
            live[start : start + 500] = True
        st = eng.status()
        assert st.segments == 4 and st.main == 5000 and st.buffer == 0
        assert eng.main_index is main and main.ntotal == 3000
        check_exact(eng, x, live, q)
        # removed ids, in the main index and in segments, never come back, even when k asks for all
        gone = np.r_[np.arange(0, 3000, 7), np.arange(3000, 5000, 5)]
        eng.remove(ids=gone.tolist())
        live[gone] = False
        check_exact(eng, x, live, q)
        many = eng.search_ids(q[:2], 1000)
        assert all(len(ids) == 1000 and live[ids].all() for ids, _ in many)
        # compaction folds the segments in: same answers, one index, a new file
        before = eng.search_ids(q, 20)
        generation = st.generation
        assert eng.checkpoint()
        st = eng.status()
        assert st.segments == 0 and st.generation == generation + 1 and st.unsaved == 0
        assert eng.main_index.ntotal == 5000 and st.deleted == len(gone)
        assert_same_answers(before, eng.search_ids(q, 20))


def test_segments_fold_and_survive_reopening(tmp_path, data):
    x, q = data
    live = np.zeros(N, bool)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x[:2000], paths(2000))
        eng.merge()
        live[:2000] = True
        for i, start in enumerate(range(2000, 2000 + 150 * (segments.MAX_SEGMENTS + 2), 150)):
            eng.add_vectors(x[start : start + 150], paths(150, start))
            eng.merge()
            live[start : start + 150] = True
            assert 1 <= eng.status().segments <= segments.MAX_SEGMENTS
        assert eng.status().segments < segments.MAX_SEGMENTS  # folded once they reached the limit
        before = check_exact(eng, x, live, q)
        assert eng.status().unsaved == live.sum() - 2000
    # closing compacts and writes the file; reopening serves the same answers
    with open_engine(tmp_path) as eng:
        st = eng.status()
        assert st.segments == 0 and st.unsaved == 0 and st.main == live.sum()
        assert_same_answers(before, eng.search_ids(q, 20))


def test_reopen_after_crash_readds_unsaved_segments(tmp_path, data):
    x, q = data
    live = np.zeros(N, bool)
    eng = open_engine(tmp_path)
    eng.add_vectors(x[:2500], paths(2500))
    eng.merge()
    eng.add_vectors(x[2500:3500], paths(1000, 2500))
    eng.merge()
    live[:3500] = True
    assert eng.status().segments == 1
    eng._opened.close()  # the process dies: no checkpoint, the segment is only in the catalog
    with open_engine(tmp_path) as again:
        st = again.status()
        assert st.main == 3500 and st.unsaved == 1000 and st.segments == 0
        check_exact(again, x, live, q)


def test_background_compaction_while_searching(tmp_path, data, monkeypatch):
    x, q = data
    monkeypatch.setattr(maintenance, "CHECKPOINT_MIN_ROWS", 1500)
    live = np.zeros(N, bool)
    with open_engine(tmp_path) as eng:
        eng.add_vectors(x[:2000], paths(2000))
        eng.merge()
        live[:2000] = True
        failures: list[BaseException] = []
        stop = threading.Event()

        def search_forever():
            while not stop.is_set():
                try:
                    for qi, (ids, scores) in zip(q, eng.search_ids(q, 10), strict=True):
                        assert len(ids) == 10
                        np.testing.assert_allclose(scores, x[ids] @ qi, atol=1e-5)  # exact cosine, always
                        assert np.all(np.diff(scores) <= 1e-6)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)
                    return

        readers = [threading.Thread(target=search_forever) for _ in range(2)]
        for t in readers:
            t.start()
        generation = eng.status().generation
        for start in range(2000, 4000, 500):
            eng.add_vectors(x[start : start + 500], paths(500, start))
            eng.merge()  # the merge that reaches 1,500 unsaved vectors starts a compaction in the background
            live[start : start + 500] = True
        eng.wait_for_background(60)
        stop.set()
        for t in readers:
            t.join()
        assert not failures, failures[0]
        st = eng.status()
        assert st.generation > generation and st.unsaved < 1500
        check_exact(eng, x, live, q)
