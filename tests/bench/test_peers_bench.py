"""``bench peers``: a quick run through the CLI, and the systems checked against a numpy brute-force oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img_agent.bench import peers, peers_systems
from img_agent.bench.data import QuerySet
from img_agent.cli.main import main


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _oracle(x: np.ndarray, xq: np.ndarray, live: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ids and scores over the live rows, numpy only."""
    scores = xq @ x.T
    scores[:, ~live] = -np.inf
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


def test_quick_run_reports_every_system_and_writes_the_files(tmp_path, monkeypatch):
    real = peers_systems.installed
    monkeypatch.setattr(peers_systems, "installed", lambda module: module != "lancedb" and real(module))
    out = tmp_path / "out"
    argv = ["bench", "peers", "--quick", "--no-progress", "--out", str(out),
            "--systems", "img-agent,faiss-flat,faiss-ivf,usearch,lancedb"]
    assert main(argv) == 0
    result = json.loads((out / "peers.json").read_text())
    (run,) = result["runs"]
    rows = {r["label"]: r for r in run["rows"]}
    assert rows["LanceDB"]["status"] == "not installed"
    assert "| LanceDB | not installed |" in (out / "peers.md").read_text()
    assert (out / "peers_recall_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ok = [r for r in run["rows"] if r["status"] == "ok"]
    labels = {r["label"] for r in ok}
    assert {"img-agent search_vectors (records)", "img-agent search_ids (index part)", "faiss Flat (exact)"} <= labels
    assert ("usearch HNSW (defaults)" in labels) == real("usearch")
    for r in ok:
        assert 0 <= r["R@10"] <= 1 and 0 <= r["R@10_after_delete"] <= 1
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["build_s"] >= 0 and r["disk_bytes"] > 0
    flat = rows["faiss Flat (exact)"]
    assert flat["R@10"] == flat["R@10_after_delete"] == 1.0 and flat["deleted_returned"] == 0
    for label in ("img-agent search_vectors (records)", "img-agent search_ids (index part)"):
        assert rows[label]["deleted_returned"] == 0
    assert run["deleted"] == int(0.3 * run["n"])
    (ivf,) = [r for r in ok if r["key"] == "faiss-ivf"]
    steps = ivf["tuning"]["ladder"]
    # the chosen nprobe is the first on the ladder that meets the floor
    assert all(rec < 0.96 for _, rec in steps[:-1]) and ivf["tuning"]["value"] == steps[-1][0]
    assert ivf["tuning"]["met"] == (steps[-1][1] >= 0.96)


def test_systems_match_a_numpy_oracle_before_and_after_deletes(tmp_path):
    rng = np.random.default_rng(7)
    x = _unit(rng.standard_normal((1500, 512)))
    xq = _unit(x[:20] + 0.5 * rng.standard_normal((20, 512)))  # near some rows, so top hits are distinct
    live = np.ones(len(x), dtype=bool)
    flat, agent = peers_systems.FaissFlat(), peers_systems.ImgAgent()
    flat.build(x, tmp_path)
    agent.build(x, tmp_path)
    try:
        want, want_scores = _oracle(x, xq, live)
        for v in flat.variants() + agent.variants():
            got = v.search(xq, 10, False)
            np.testing.assert_allclose(np.take_along_axis(xq @ x.T, got, axis=1), want_scores, atol=1e-5)
        victims = np.sort(rng.choice(len(x), size=450, replace=False))
        victims = np.union1d(victims, want[:, 0])  # every query's best hit goes
        flat.delete(victims)
        agent.delete(victims)
        live[victims] = False
        want, want_scores = _oracle(x, xq, live)
        for v in flat.variants() + agent.variants():
            for single in (False, True):
                got = np.vstack([v.search(xq[i : i + 1], 10, True) for i in range(len(xq))]) if single \
                    else v.search(xq, 10, False)
                assert not np.isin(got, victims).any(), v.label
                np.testing.assert_allclose(np.take_along_axis(xq @ x.T, got, axis=1), want_scores, atol=1e-5)
    finally:
        agent.close()


def test_recall_is_the_share_of_the_exact_top_ten_found():
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((300, 32)))
    xq = _unit(rng.standard_normal((5, 32)))
    ids, scores = _oracle(x, xq, np.ones(len(x), dtype=bool))
    qs = QuerySet("q", xq, ids, scores)
    got = ids.copy()
    got[0, 7:] = ids[4, :3] if not set(ids[4, :3]) & set(ids[0]) else -1  # 3 misses in query 0
    got[1, :] = -1  # nothing for query 1
    assert peers.recall10(got, x, qs) == pytest.approx((50 - 3 - 10) / 50)
    assert peers.recall10(ids, x, qs) == 1.0
