"""Recall computations: the numbers the benchmark reports must be right."""

from __future__ import annotations

import numpy as np
import pytest

from img_agent.bench import data
from img_agent.bench.synthetic import synthetic
from img_agent.bench.metrics import one_recall_at, recall_at, recall_table


def _qs(xb, xq, k):
    ids, scores = data.exact_knn(xb, xq, k)
    return data.QuerySet("q", xq, ids, scores)


def test_exact_results_have_recall_one(rng):
    xb = synthetic(2000, 64, seed=1)
    xq = synthetic(30, 64, seed=1, query="image")
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
