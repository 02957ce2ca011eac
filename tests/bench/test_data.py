"""Benchmark datasets: query sets with exact neighbours and difficulty statistics, vector files."""

from __future__ import annotations

import numpy as np
import pytest

from img_agent.bench import data
from img_agent.bench.synthetic import DATA_KINDS, synthetic


@pytest.mark.parametrize("kind", DATA_KINDS)
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


def test_fvecs_and_npy_round_trip(tmp_path):
    x = synthetic(50, 24, seed=0)
    data.write_fvecs(tmp_path / "x.fvecs", x)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(data.load_vectors(tmp_path / "x.fvecs"), x)
    np.testing.assert_array_equal(data.load_vectors(tmp_path / "x.npy", limit=10), x[:10])
    (tmp_path / "bad.fvecs").write_bytes(b"\x10\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(ValueError, match="multiple of the row size"):
        data.load_vectors(tmp_path / "bad.fvecs")


def test_dataset_from_file_holds_out_queries(tmp_path):
    x = synthetic(600, 24, seed=0)
    np.save(tmp_path / "emb.npy", x * 3)  # not normalised: the ip metric normalises
    ds = data.make_dataset(n=10_000, nq=50, data=tmp_path / "emb.npy")
    assert ds.n == 550 and ds.queries[0].nq == 50 and ds.queries[0].name == "held-out"
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1.0, atol=1e-5)
