"""The ANN sweep's pieces: the engine's rule among the plans, exact re-ranking, resuming, HNSW quantizers."""

from __future__ import annotations

import numpy as np

from img_agent.bench import ann_plans, ann_sweep, data


def test_planned_rule_is_the_engines_automatic_choice():
    assert ann_plans.planned_rule(50_000).index == "Flat"
    r = ann_plans.planned_rule(100_000)
    assert (r.index, r.nprobe, r.rerank) == ("IVF1024,SQ8", 16, 100)
    r = ann_plans.planned_rule(1_000_000)
    assert (r.index, r.nprobe) == ("IVF4096,SQ8", 64)


def test_rerank_of_exact_candidates_is_exact():
    ds = data.make_dataset(n=2000, nq=10, dim=32)
    qs = ds.queries[0]
    shuffled = qs.gt_ids[:, ::-1].copy()  # right candidates, wrong order
    ids = ann_sweep.rerank(ds, qs.xq, shuffled, 10)
    np.testing.assert_array_equal(ids, qs.gt_ids[:, :10])


def test_sweep_resumes_from_saved_rows():
    ds = data.make_dataset(n=2000, nq=10, dim=32)
    cfg = ann_plans.SweepConfig.quick()
    cfg.families = ("Flat", "IVF")
    saved: list[list[dict]] = []
    rows = ann_sweep.run_sweep(ds, cfg, on_plan=lambda r: saved.append(list(r)))
    assert len(saved) == len(ann_plans.plans_for(ds, cfg)) and saved[-1] == rows
    messages: list[str] = []
    again = ann_sweep.run_sweep(ds, cfg, done_rows=saved[1], progress=lambda a, m: messages.append(m))
    assert [r["label"] for r in again] == [r["label"] for r in rows]
    plans = [p.index_string for p in ann_plans.plans_for(ds, cfg)]
    built = [m.removeprefix("build ") for m in messages if m.startswith("build ")]
    assert built == plans[2:]  # the first two plans were saved, the rest is measured again


def test_hnsw_coarse_quantizer_shares_the_centroids():
    ds = data.make_dataset(n=3000, nq=20, dim=32, query_kinds=("image",))
    cfg = ann_plans.SweepConfig.quick()
    cfg.families, cfg.ivf_codecs, cfg.ivf_quantizers, cfg.reranks = ("IVF",), ("Flat",), ("flat", "hnsw"), (0,)
    rows = ann_sweep.run_sweep(ds, cfg)
    flat = {r["params"]["nprobe"]: r for r in rows if "_HNSW" not in r["index"]}
    hnsw = {r["params"]["nprobe"]: r for r in rows if "_HNSW" in r["index"]}
    assert flat.keys() == hnsw.keys() and flat
    for p in flat:  # same centroids, exact assignment for this few lists: the same lists are probed
        assert abs(flat[p]["R@10"] - hnsw[p]["R@10"]) <= 0.02


def test_planned_rule_follows_the_engines_table_at_every_size():
    from img_agent.index.faiss_plan import plan_for

    for n in (10_000, 200_000, 5_000_000):
        plan, rule = plan_for(n, 512), ann_plans.planned_rule(n)
        assert (rule.index, rule.nlist or None, rule.nprobe or None) == (plan.factory, plan.nlist, plan.nprobe)
    big = ann_plans.planned_rule(5_000_000)
    assert big.rerank == 100  # compressed codes: re-ranked as the engine does
    plans = ann_plans.make_plans(ann_plans.SweepConfig(families=("IVF",)), 5_000_000)
    measured = [p for p in plans if ann_plans.same_index(p.index_string, big.index)]
    assert measured and big.rerank in measured[0].reranks
    assert any(s["nprobe"] == big.nprobe for s in measured[0].settings)
