"""The engine's automatic index choice meets a recall floor on seeded CLIP-like data.

Above the exact-search threshold the engine trains an IVF index; this builds one through the real
engine (add_vectors + merge, index_string='auto') and checks tie-aware recall@10 against exact search
for image-like and text-like queries. Floors sit below the values measured by ``img-agent bench``
(docs/benchmarks.md) with a margin for the small N.
"""

from __future__ import annotations

import numpy as np
import pytest

from img_agent.bench.engine_bench import MODEL_FOR_512, LiveMirror, hit_ids
from img_agent.bench.metrics import recall_table
from img_agent.bench.synthetic import synthetic
from img_agent.config import Settings

N = 60_000  # just above the exact-search threshold: the smallest trained index the rule builds
FLOORS = {"image": 0.95, "text": 0.90}


@pytest.mark.slow
def test_auto_index_meets_recall_floor(tmp_path):
    from img_agent.index.engine import Engine

    mirror = LiveMirror(synthetic(N, 512, seed=7))
    settings = Settings(data_dir=tmp_path / "store", model=MODEL_FOR_512, merge_threshold=10**9)
    with Engine.open(settings) as engine:
        for s in range(0, N, 20_000):
            engine.add_vectors(mirror.x[s : s + 20_000], [f"/r/{i}.jpg" for i in range(s, min(N, s + 20_000))])
        mirror.live[:] = True
        engine.merge()
        status = engine.status()
        assert status.trained and status.index.startswith("IVF"), status
        for kind, floor in FLOORS.items():
            xq = synthetic(200, 512, seed=7, query=kind)
            qs = mirror.exact(xq, 10, kind)
            ids = hit_ids(engine.search_vectors(xq, 10), 10)
            r10 = recall_table(ids, mirror.x, qs, ks=(10,), rs=())["R@10"]
            assert r10 >= floor, f"{status.index} nprobe={status.nprobe}: R@10 {r10:.3f} < {floor} on {kind} queries"
            assert np.all(ids >= 0)
