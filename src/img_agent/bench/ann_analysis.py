"""Reading an ANN sweep: does the engine's rule meet the targets, and which settings are cheapest.

Works on the result rows alone, so ``img-agent bench report`` can redo it from a stored ``ann.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from img_agent.bench.ann_plans import RuleChoice, planned_rule, same_index


@dataclass(frozen=True)
class Targets:
    recall10: float = 0.95
    speedup: float = 50.0
    memory_bytes_at_1m: float = 0.6e9


def find_row(rows: list[dict], choice: RuleChoice, queries: str, *, rerank: int | None = None) -> dict | None:
    """The sweep row measuring ``choice`` (exact Flat, or IVF with its nprobe and rerank)."""
    want_rr = choice.rerank if rerank is None else rerank
    for r in rows:
        if r["queries"] != queries:
            continue
        if choice.index == "Flat" and r["family"] == "Flat":
            return r
        if same_index(r["index"], choice.index) and r["params"].get("nprobe") == choice.nprobe \
                and r["rerank"] == want_rr:
            return r
    return None


def check_rule(rows: list[dict], n: int, queries: str, targets: Targets = Targets(), *, dim: int = 512) -> dict:
    """Does the engine's automatic choice meet the targets at this size? Memory target scales linearly to 1M."""
    choice = planned_rule(n, dim=dim)
    row = find_row(rows, choice, queries)
    out: dict = {"n": n, "queries": queries, "rule": choice.label, "measured": row is not None}
    if row is None:
        return out
    mem_1m = row["index_bytes"] * 1_000_000 / n
    out.update(
        {
            "R@10": row.get("R@10"),
            "R@100_same_config": row.get("R@100"),
            "p50_ms": row["p50_ms"],
            "p99_ms": row["p99_ms"],
            "speedup_p50": row.get("speedup_p50"),
            "index_bytes": row["index_bytes"],
            "index_bytes_scaled_to_1m": int(mem_1m),
            "meets_recall": (row.get("R@10") or 0) >= targets.recall10,
            "meets_speedup": (row.get("speedup_p50") or 0) >= targets.speedup,
            "meets_memory": mem_1m <= targets.memory_bytes_at_1m,
        }
    )
    if choice.nlist:
        big = find_row(rows, choice, queries, rerank=1000)
        if big:
            out["R@100_rerank1000"] = big.get("R@100")
    return out


def frontier(
    rows: list[dict], *, recall_key: str = "R@10", floor: float = 0.95, max_bytes: float | None = None
) -> list[dict]:
    """Per (queries, index string), the fastest setting with ``recall_key`` >= floor (index ≤ max_bytes)."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        if (r.get(recall_key) or 0) < floor:
            continue
        if max_bytes is not None and r["index_bytes"] > max_bytes:
            continue
        key = (r["queries"], r["index"])
        if key not in best or r["p50_ms"] < best[key]["p50_ms"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r["queries"], r["p50_ms"]))


def min_nprobe(rows: list[dict], *, floor: float = 0.95, recall_key: str = "R@10") -> list[dict]:
    """Per IVF index and re-rank setting: the smallest nprobe reaching ``floor`` on every query set,
    with its latency per query set (what an nprobe rule has to provide)."""
    series: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for r in rows:
        if r["family"] != "IVF":
            continue
        series.setdefault((r["index"], r["rerank"]), {}).setdefault(r["queries"], []).append(r)
    out = []
    def order(kv):
        (index, rr), by_q = kv
        return (next(iter(by_q.values()))[0]["params"]["nlist"], index, rr)

    for (index, rr), by_q in sorted(series.items(), key=order):
        entry: dict = {"index": index, "rerank": rr, "nlist": next(iter(by_q.values()))[0]["params"]["nlist"],
                       "index_bytes": next(iter(by_q.values()))[0]["index_bytes"]}
        need = 0
        for q, rs in by_q.items():
            ok = sorted((r for r in rs if (r.get(recall_key) or 0) >= floor), key=lambda r: r["params"]["nprobe"])
            if not ok:
                need = None
                entry[q] = {"best": max(r.get(recall_key) or 0 for r in rs)}
                continue
            r = ok[0]
            entry[q] = {"nprobe": r["params"]["nprobe"], recall_key: r.get(recall_key), "p50_ms": r["p50_ms"],
                        "speedup_p50": r.get("speedup_p50")}
            if need is not None:
                need = max(need, r["params"]["nprobe"])
        entry["nprobe_all"] = need
        if need is not None:
            entry["p50_ms_at_nprobe_all"] = {
                q: next((r["p50_ms"] for r in rs if r["params"]["nprobe"] == need), None) for q, rs in by_q.items()
            }
            entry["recall_at_nprobe_all"] = {
                q: next((r.get(recall_key) for r in rs if r["params"]["nprobe"] == need), None) for q, rs in by_q.items()
            }
        out.append(entry)
    return out


def summary_from_rows(rows: list[dict], n: int, query_sets: list[str], *, dim: int = 512) -> dict:
    """The analysis block stored next to the rows of one dataset (``n`` vectors of ``dim``) in the result."""
    return {
        "rule_check": [check_rule(rows, n, q, dim=dim) for q in query_sets],
        "min_nprobe_R10_0.95": min_nprobe(rows),
        "fastest_meeting_R10_0.95": [
            {"queries": r["queries"], "label": r["label"], "p50_ms": r["p50_ms"], "R@10": r["R@10"],
             "index_bytes": r["index_bytes"]}
            for r in frontier(rows)
        ],
    }
