"""Synthetic benchmark vectors: seeded, unit length, prefix-stable."""

from __future__ import annotations

import numpy as np

from img_agent.bench.synthetic import synthetic


def test_synthetic_data_is_seeded_unit_and_prefix_stable():
    a = synthetic(40_000, 32, seed=3)
    b = synthetic(20_000, 32, seed=3)
    assert a.dtype == np.float32 and a.shape == (40_000, 32)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a[:20_000], b)
    assert not np.array_equal(synthetic(100, 32, seed=4), a[:100])
    q = synthetic(100, 32, seed=3, query="image")  # held out: never a database row
    assert (q @ a.T).max() < 0.9999


def test_clip_like_vectors_still_work():
    from img_agent.testing import clip_like_vectors

    x = clip_like_vectors(100, 16, seed=0)
    assert x.shape == (100, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
