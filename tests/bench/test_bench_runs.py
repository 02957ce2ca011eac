"""Every benchmark in quick mode (seconds each): the output files exist and hold sane numbers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from img_agent.bench import ann, data
from img_agent.cli import bench as cli


def _run(tmp_path, *argv: str) -> dict:
    out = tmp_path / "out"
    assert cli.main([*argv, "--quick", "--no-progress", "--out", str(out)]) == 0
    name = argv[0]
    result = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.md").read_text().startswith("# ")
    assert result["meta"]["quick"] is True and result["meta"]["machine"]["cores"] >= 1
    return result


def test_ann_quick_writes_json_markdown_and_plots(tmp_path):
    result = _run(tmp_path, "ann")
    out = tmp_path / "out"
    (run,) = result["runs"]
    assert [q["name"] for q in run["query_sets"]] == ["image", "text"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"ann_clip_3000_{q}_{r}.png" for q in ("image", "text") for r in ("R10", "R100")]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = run["rows"]
    assert {r["family"] for r in rows} == set(ann.FAMILIES)
    flat = [r for r in rows if r["family"] == "Flat"]
    assert all(r["R@1"] == r["R@10"] == r["R@100"] == r["1-R@100"] == 1.0 for r in flat)
    for r in rows:
        assert 0 <= r["R@10"] <= 1 and r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["index_bytes"] > 0
        assert r["1-R@10"] >= r["R@1"] - 1e-9  # 1-recall@10 is never below recall@1
    # re-ranking from the float vectors never hurts R@10 of the same candidates' order
    by = {(r["queries"], r["index"], r["params"].get("nprobe")): r for r in rows if not r["rerank"]}
    for r in rows:
        if r["rerank"] == 100 and r["family"] == "IVF":
            assert r["R@10"] >= by[(r["queries"], r["index"], r["params"].get("nprobe"))]["R@10"] - 1e-9
    rule = run["summary"]["rule_check"]
    assert rule[0]["rule"] == "Flat (exact)" and rule[0]["R@10"] == 1.0
    md = (out / "ann.md").read_text()
    assert "1-recall@R" in md and "tie-aware" in md


def test_engine_quick(tmp_path):
    result = _run(tmp_path, "engine")
    (run,) = result["runs"]
    assert run["merge_10k"]["report"]["retrained"] is False
    assert run["remove"]["reappeared"] == 0 and run["remove"]["removed"] > 0
    for q in ("image", "text"):
        assert run["search_n"][q]["R@10"] >= 0.8
        assert run["search_n"][q]["full_k10"] == 1.0
    assert run["serving_probe"].get("p50_ms", 0) > 0, run["serving_probe"]
    assert run["disk_bytes"]["vectors.f32"] == (4000 + 500) * 512 * 4  # N plus the largest buffer step
    assert (tmp_path / "out" / "engine_buffer.png").exists()


def test_ingest_quick(tmp_path):
    result = _run(tmp_path, "ingest")
    r = result["run"]
    for way in ("model_only", "engine_pipeline", "encode_stream", "naive_loop"):
        assert r[way]["images"] in (24, r["naive_images"]) and r[way]["images_per_s"] > 0
    assert (tmp_path / "out" / "ingest.png").exists()


def test_e2e_quick(tmp_path):
    result = _run(tmp_path, "e2e")
    (r,) = result["runs"]
    assert r["status"]["live"] == 3000
    assert r["search_text"]["p50_ms"] > 0
    assert r["mcp_search_by_text"].get("p50_ms", 0) > 0, r["mcp_search_by_text"]
    assert r["encode_text"]["queries"] == r["search_vectors"]["queries"] == 10
    assert r["mcp_stdio"].get("tools", 0) > 0, r["mcp_stdio"]


def test_register_under_a_parent_parser_with_global_model_option():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub, common)
    args = parser.parse_args(["bench", "ingest", "--model", "tiny-test", "--quick", "--images", "2k"])
    assert args.model == "tiny-test" and args.images == 2000 and callable(args.func)
    args = parser.parse_args(["bench", "ann", "--n", "100k,1M", "--kind", "clip,smooth", "--families", "IVF,HNSW"])
    assert args.n == [100_000, 1_000_000] and args.kind == ["clip", "smooth"] and args.families == ["IVF", "HNSW"]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "ann", "--families", "Annoy"])


def test_planned_rule_matches_the_leads_formula():
    assert ann.planned_rule(50_000).index == "Flat"
    r = ann.planned_rule(100_000)
    assert (r.index, r.nprobe, r.rerank) == ("IVF1024,SQ8", 16, 100)
    r = ann.planned_rule(1_000_000)
    assert (r.index, r.nprobe) == ("IVF4096,SQ8", 64)


def test_rerank_of_exact_candidates_is_exact():
    ds = data.make_dataset(n=2000, nq=10, dim=32)
    qs = ds.queries[0]
    shuffled = qs.gt_ids[:, ::-1].copy()  # right candidates, wrong order
    ids = ann.rerank(ds, qs.xq, shuffled, 10)
    np.testing.assert_array_equal(ids, qs.gt_ids[:, :10])


def test_sweep_resumes_from_saved_rows():
    ds = data.make_dataset(n=2000, nq=10, dim=32)
    cfg = ann.SweepConfig.quick()
    cfg.families = ("Flat", "IVF")
    saved: list[list[dict]] = []
    rows = ann.run_sweep(ds, cfg, on_plan=lambda r: saved.append(list(r)))
    assert len(saved) == len(ann.plans_for(ds, cfg)) and saved[-1] == rows
    messages: list[str] = []
    again = ann.run_sweep(ds, cfg, done_rows=saved[1], progress=lambda a, m: messages.append(m))
    assert [r["label"] for r in again] == [r["label"] for r in rows]
    plans = [p.index_string for p in ann.plans_for(ds, cfg)]
    built = [m.removeprefix("build ") for m in messages if m.startswith("build ")]
    assert built == plans[2:]  # the first two plans were saved, the rest is measured again


def test_hnsw_coarse_quantizer_shares_the_centroids():
    ds = data.make_dataset(n=3000, nq=20, dim=32, query_kinds=("image",))
    cfg = ann.SweepConfig.quick()
    cfg.families, cfg.ivf_codecs, cfg.ivf_quantizers, cfg.reranks = ("IVF",), ("Flat",), ("flat", "hnsw"), (0,)
    rows = ann.run_sweep(ds, cfg)
    flat = {r["params"]["nprobe"]: r for r in rows if "_HNSW" not in r["index"]}
    hnsw = {r["params"]["nprobe"]: r for r in rows if "_HNSW" in r["index"]}
    assert flat.keys() == hnsw.keys() and flat
    for p in flat:  # same centroids, exact assignment for this few lists: the same lists are probed
        assert abs(flat[p]["R@10"] - hnsw[p]["R@10"]) <= 0.02
