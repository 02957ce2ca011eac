"""``img-agent bench duplicates`` at tiny sizes: the report's shape, sane cosines, the planted groups found."""

from __future__ import annotations

import json

from img_agent.bench import suite
from img_agent.bench.duplicates_bench import EDITS
from img_agent.cli.main import main
from img_agent.results import DEFAULT_DUPLICATE_THRESHOLD


def test_duplicates_bench_reports_copies_pairs_and_timing(tmp_path):
    out = tmp_path / "out"
    argv = ["bench", "duplicates", "--images", "6", "--vectors", "900", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "duplicates.json").read_text())
    assert result["benchmark"] == "duplicates" and result["meta"]["config"]["vectors"] == 900

    copies = result["run"]["copies"]
    assert copies["model"] == "tiny-test" and copies["threshold"] == DEFAULT_DUPLICATE_THRESHOLD
    assert copies["indexed"] == 6 * (1 + len(EDITS))
    assert list(copies["edits"]) == ["reencode_q60", "resize_50", "crop_5pct", "crop_10pct"]
    for stats in copies["edits"].values():
        assert stats["count"] == 6
        assert -1 <= stats["min"] <= stats["p5"] <= stats["median"] <= 1.0001
        assert 0 <= stats["at_or_above_threshold"] <= 1
    reencoded = copies["edits"]["reencode_q60"]
    assert reencoded["min"] >= 0.99 and reencoded["at_or_above_threshold"] == 1
    distinct = copies["distinct"]
    assert distinct["count"] == 6 * 5 // 2
    assert -1 <= distinct["median"] <= distinct["p99"] <= distinct["max"] <= 1.0001
    assert 0 <= distinct["at_or_above_threshold"] <= 1
    grouped = copies["find_duplicates"]
    assert grouped["copies_grouped_with_original"] >= 0.25  # at least the re-encoded copies
    assert grouped["groups"] >= 1

    timing = result["run"]["timing"]
    assert timing["vectors"] == 900 and timing["planted_groups"] == 4 and timing["planted_copies"] == 1 + 2 + 3 + 1
    assert [r["phase"] for r in timing["runs"]] == ["buffer", "merged"]
    assert [r["method"] for r in timing["runs"]] == ["exact flat", "main index"]
    for run in timing["runs"]:
        assert run["planted_found"] == 4 and run["other_groups"] == 0 and run["groups"] == 4
        assert run["extras"] == 7 and run["seconds"] > 0

    md = (out / "duplicates.md").read_text()
    assert md.startswith("# Duplicate detection benchmark") and "crop_10pct" in md and "4/4" in md
    (out / "duplicates.md").unlink()
    assert suite.rerender(out) == [out / "duplicates.md"]
    assert (out / "duplicates.md").read_text() == md
