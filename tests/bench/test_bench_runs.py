"""Every benchmark in quick mode through ``img-agent bench`` (seconds each): the files exist and hold sane numbers."""

from __future__ import annotations

import json

from img_agent.bench.ann_plans import FAMILIES
from img_agent.cli.main import main


def _run(tmp_path, *argv: str) -> dict:
    out = tmp_path / "out"
    assert main(["bench", *argv, "--quick", "--no-progress", "--out", str(out)]) == 0
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
    assert {r["family"] for r in rows} == set(FAMILIES)
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


def test_service_quick(tmp_path):
    result = _run(tmp_path, "service")
    (r,) = result["runs"]
    assert r["rounds"] == 5 and r["bare_python"]["p50_ms"] > 0
    assert r["cli_over_bare"] > 1 and r["bridge_init_over_bare"] > 1 and r["bridged_over_in_process"] > 0
    assert r["memory_service_and_3_bridges_bytes"] > 0 and r["memory_one_standalone_server_bytes"] > 0
    assert r["cold_first_search_answer"] in ("loading", "results")


def test_scale_quick_compares_with_raw_faiss_and_never_returns_removed_ids(tmp_path):
    result = _run(tmp_path, "scale", "--n", "4000", "--queries", "40")
    r = result["result"]
    assert r["n"] == 4000 and r["removed_returned"] == 0
    systems = {s["system"]: s for s in r["search"]}
    assert systems["faiss exact Flat"]["R@10"] == 1.0
    assert systems["img-agent public search"]["R@10"] == 1.0  # a 4,000-image store is searched exactly
    assert r["build"]["add_vectors_per_s"] > 0 and r["build"]["peak_rss_bytes"] > 0


def test_backends_quick_compares_faiss_and_milvus_lite(tmp_path):
    result = _run(tmp_path, "backends", "--n", "1500", "--queries", "10")
    stores = result["result"]["stores"]
    assert list(stores) == ["faiss (auto)", "Milvus Lite (auto)", "Milvus Lite IVF_FLAT"]
    assert stores["Milvus Lite (auto)"]["index"] == "milvus FLAT"
    assert stores["Milvus Lite IVF_FLAT"]["index"].startswith("milvus IVF_FLAT")
    for name, s in stores.items():
        assert s["delete"]["returned_after"] == 0 and s["insert_vectors_per_s"] > 0
        if "IVF" not in s["index"]:  # exact at this size: the oracle's answers, filtered or not
            assert s["search"]["R@10"] == s["filtered search"]["R@10"] == 1.0, name
