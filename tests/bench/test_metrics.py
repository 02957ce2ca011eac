"""Recall computations and benchmark data: the numbers the benchmark reports must be right."""

from __future__ import annotations

import numpy as np
import pytest

from img_agent.bench import data
from img_agent.bench.metrics import one_recall_at, recall_at, recall_table


def _qs(xb, xq, k):
    ids, scores = data.exact_knn(xb, xq, k)
    return data.QuerySet("q", xq, ids, scores)


def test_exact_results_have_recall_one(rng):
    xb = data.synthetic(2000, 64, seed=1)
    xq = data.synthetic(30, 64, seed=1, query="image")
    qs = _qs(xb, xq, 100)
    table = recall_table(qs.gt_ids, xb, qs)
    assert table == {"R@1": 1.0, "R@10": 1.0, "R@100": 1.0, "1-R@1": 1.0, "1-R@10": 1.0, "1-R@100": 1.0}


def test_tie_aware_recall_accepts_the_other_copy_of_a_duplicate():
    # ids 0 and 1 are the same vector; the exact search returns one of them, an index the other
    xb = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    xq = np.array([[1, 0.01]], dtype=np.float32)
    gt_ids, gt_scores = data.exact_knn(xb, xq, 1)
    other = np.array([[1 - gt_ids[0, 0]]])  # the tied copy
    exact = data.similarity(xb, xq, other)
    assert recall_at(1, other, gt_scores, approx_scores_exact=exact) == 1.0
    assert one_recall_at(1, other, gt_ids, gt_scores, approx_scores_exact=exact) == 1.0
    # a naive id comparison would have scored 0; a genuinely worse id still scores 0
    worse = np.array([[2]])
    assert recall_at(1, worse, gt_scores, approx_scores_exact=data.similarity(xb, xq, worse)) == 0.0


def test_set_recall_counts_each_id_once_and_ignores_missing():
    xb = np.eye(8, dtype=np.float32)[:, :8] + np.arange(8)[:, None] * 0.01
    xq = np.ones((1, 8), dtype=np.float32)
    gt_ids, gt_scores = data.exact_knn(xb, xq, 4)
    approx = np.array([[gt_ids[0, 0], gt_ids[0, 0], -1, gt_ids[0, 1]]])
    exact = data.similarity(xb, xq, approx)
    assert recall_at(4, approx, gt_scores, approx_scores_exact=exact) == pytest.approx(0.5)


def test_one_recall_is_weaker_than_set_recall():
    # the true nearest neighbour is present but the rest of the top-10 is wrong
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    xq = rng.standard_normal((5, 16)).astype(np.float32)
    qs = _qs(xb, xq, 10)
    approx = np.concatenate([qs.gt_ids[:, :1], qs.gt_ids[:, :1] * 0 + np.arange(490, 499)], axis=1)
    approx[:, 1:] = np.where(np.isin(approx[:, 1:], qs.gt_ids), 0, approx[:, 1:])
    t = recall_table(approx, xb, qs, ks=(10,), rs=(10,))
    assert t["1-R@10"] == 1.0
    assert t["R@10"] < 0.5


def test_synthetic_data_is_seeded_unit_and_prefix_stable():
    a = data.synthetic(40_000, 32, seed=3)
    b = data.synthetic(20_000, 32, seed=3)
    assert a.dtype == np.float32 and a.shape == (40_000, 32)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a[:20_000], b)
    assert not np.array_equal(data.synthetic(100, 32, seed=4), a[:100])
    q = data.synthetic(100, 32, seed=3, query="image")  # held out: never a database row
    assert (q @ a.T).max() < 0.9999


@pytest.mark.parametrize("kind", data.DATA_KINDS)
def test_every_kind_builds_a_dataset_with_statistics(kind):
    ds = data.make_dataset(n=3000, nq=20, dim=64, kind=kind, query_kinds=("image", "text"))
    assert [q.name for q in ds.queries] == ["image", "text"]
    for q in ds.queries:
        assert q.gt_ids.shape == (20, 100)
        assert {"q_top1", "lid", "rc"} <= set(q.info)
    assert -1 <= ds.info["mean_cos"] <= 1


def test_clip_model_has_the_cone_and_text_queries_are_out_of_distribution():
    ds = data.make_dataset(n=5000, nq=50, kind="clip", query_kinds=("image", "text"))
    img, txt = ds.queries
    assert 0.3 < ds.info["mean_cos"] < 0.6  # CLIP image embeddings share a cone
    assert img.info["q_top1"] > txt.info["q_top1"]  # captions sit farther from images
    assert txt.info["lid"] > img.info["lid"]


def test_clip_like_vectors_still_work():
    from img_agent.testing import clip_like_vectors

    x = clip_like_vectors(100, 16, seed=0)
    assert x.shape == (100, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_fvecs_and_npy_round_trip(tmp_path):
    x = data.synthetic(50, 24, seed=0)
    data.write_fvecs(tmp_path / "x.fvecs", x)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(data.load_vectors(tmp_path / "x.fvecs"), x)
    np.testing.assert_array_equal(data.load_vectors(tmp_path / "x.npy", limit=10), x[:10])
    (tmp_path / "bad.fvecs").write_bytes(b"\x10\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(ValueError, match="multiple of the row size"):
        data.load_vectors(tmp_path / "bad.fvecs")


def test_dataset_from_file_holds_out_queries(tmp_path):
    x = data.synthetic(600, 24, seed=0)
    np.save(tmp_path / "emb.npy", x * 3)  # not normalised: the ip metric normalises
    ds = data.make_dataset(n=10_000, nq=50, data=tmp_path / "emb.npy")
    assert ds.n == 550 and ds.queries[0].nq == 50 and ds.queries[0].name == "held-out"
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1.0, atol=1e-5)
