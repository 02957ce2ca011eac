"""Several benchmarks at once: ``bench all`` runs every one in turn, ``bench report`` re-renders stored results."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from img_agent.bench import ann_sweep, duplicates_bench, e2e, engine_bench, ingest, report, service_bench
from img_agent.bench.ann_analysis import summary_from_rows
from img_agent.bench.ann_plans import FAMILIES
from img_agent.bench.common import command_line, write_json

log = logging.getLogger(__name__)

RUNNERS: tuple[tuple[str, Callable[[Any], Path]], ...] = (
    ("ann", ann_sweep.run), ("engine", engine_bench.run), ("ingest", ingest.run), ("e2e", e2e.run),
    ("service", service_bench.run), ("duplicates", duplicates_bench.run),
)
# options of one benchmark that the others lack, with the value each runner assumes
_DEFAULTS = (("families", None), ("images", None), ("size", None), ("model", None), ("batch_size", 32),
             ("workers", None), ("query_kind", None), ("data", None), ("query_data", None), ("metric", "ip"),
             ("kind", ["clip"]), ("store", None), ("index_string", "auto"), ("rounds", None),
             ("vectors", None))


def run_all(options: argparse.Namespace, on_written: Callable[[Path], None]) -> tuple[Path, bool]:
    """Every benchmark in turn; one failing does not stop the others.

    ``on_written(path)`` gets each benchmark's markdown as it is written. Returns the ``README.md``
    linking them all, and whether every benchmark succeeded.
    """
    done: list[tuple[str, str]] = []
    for name, run in RUNNERS:
        sub = argparse.Namespace(**vars(options))
        for attr, default in _DEFAULTS:
            if not hasattr(sub, attr):
                setattr(sub, attr, default)
        if sub.families is None:
            sub.families = list(FAMILIES)
        try:
            on_written(run(sub))
            done.append((name, "ok"))
        except Exception as exc:  # noqa: BLE001 - report and go on with the next benchmark
            log.exception("bench %s failed", name)
            done.append((name, f"failed: {type(exc).__name__}: {exc}"))
    meta = report.new_result("all", command=command_line(options), quick=options.quick)["meta"]
    lines = ["# Benchmark results", "", report.meta_markdown(meta), ""]
    lines += [f"- [{name}]({name}.md): {state}" for name, state in done]
    readme = options.out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme, all(state == "ok" for _, state in done)


def rerender(folder: Path) -> list[Path]:
    """Rebuild the markdown and plots of every ``<name>.json`` result in ``folder``; returns the markdown written."""
    written = []
    for name in ("ann", "engine", "ingest", "e2e", "service", "duplicates"):
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        if name == "ann":
            for run in result.get("runs", []):
                ds = run["dataset"]
                run["summary"] = summary_from_rows(run["rows"], ds["n"], [q["name"] for q in run["query_sets"]],
                                                   dim=ds.get("dim", 512))
                for qs in run["query_sets"]:
                    qs["plots"] = report.ann_plots(run, qs["name"], folder, f"ann_{ds['name']}_{ds['n']}_{qs['name']}")
            markdown = report.ann_markdown(result)
        elif name == "engine":
            result["plots"] = report.engine_plots(result, folder)
            markdown = report.engine_markdown(result)
        elif name == "ingest":
            result["plots"] = report.ingest_plots(result, folder)
            markdown = report.ingest_markdown(result)
        elif name == "service":
            markdown = service_bench.markdown(result)
        elif name == "duplicates":
            markdown = duplicates_bench.markdown(result)
        else:
            markdown = report.e2e_markdown(result)
        write_json(path, result)
        (folder / f"{name}.md").write_text(markdown)
        written.append(folder / f"{name}.md")
    return written
