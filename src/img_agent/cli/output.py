"""Everything the command line shows: JSON for ``--json``, tables and lines for people, progress bars.

Results go to stdout; progress, notes about a chat turn and tool traces go to stderr. Text that
comes from the collection (paths, reasons, queries) is shown through
:func:`~img_agent.textsafe.one_line`, so a file name cannot break a table's lines or move the cursor.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from img_agent.textsafe import one_line

if TYPE_CHECKING:
    from img_agent.agent.chat import ChatTurn
    from img_agent.agent.qa import QAResult
    from img_agent.agent.rag import RagResult


# -- JSON ----------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """Plain JSON data for a result model, or a list / dict holding them."""
    if hasattr(value, "model_dump"):  # a pydantic result model
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (non-ASCII characters kept as they are)."""
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def emit(result: Any, human: Callable[[], None], *, as_json: bool) -> None:
    """Print ``result`` as JSON when ``as_json``, else call the human renderer."""
    if as_json:
        print_json(result)
    else:
        human()


# -- progress ------------------------------------------------------------------------------------
def progress_bar(desc: str):
    """A ``ProgressCallback`` drawing a tqdm bar on stderr (only when stderr is a terminal); has ``close()``."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)

    def update(done: int, total: int | None, message: str) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.set_postfix_str(message[:40], refresh=False)
        bar.n = done
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


# -- the store commands (they render the tools' JSON results) ------------------------------------
Json = dict[str, Any]


def print_hits(hits: Sequence[Json]) -> None:
    """The search results table: rank, score, id, path."""
    if not hits:
        print("No results (the index is empty or nothing matched the filter).")
        return
    print(f"{'rank':>4}  {'score':>7}  {'id':>7}  path")
    for h in hits:
        folded = h.get("duplicates") or []
        more = f"  (+{len(folded)} near-duplicate(s): {', '.join(map(str, folded))})" if folded else ""
        print(f"{h['rank']:>4}  {h['score']:>7.4f}  {h['id']:>7}  {one_line(h['path'])}{more}")


def print_status(st: Json) -> None:
    """``status``: one aligned ``key  value`` row per fact, then the advice and the jobs."""
    rows = [
        ("images (live)", f"{st['live']:,}"), ("in main index", f"{st['main']:,}"), ("in buffer", f"{st['buffer']:,}"),
        ("removed, awaiting rebuild", f"{st['deleted']:,}"), ("index", st["index"]),
        ("index string", st["index_string"]), ("nlist / nprobe", f"{st['nlist'] or '-'} / {st['nprobe'] or '-'}"),
        ("search setting", st.get("tuning") or "-"), ("segments", str(st.get("segments", 0))),
        ("model", f"{st['model']} ({st['pretrained']}), {st['dim']}-d"), ("generation", str(st["generation"])),
        ("vector store", st.get("vector_store", "faiss")), ("data dir", st["data_dir"]),
        ("size on disk", _human_bytes(st["bytes_on_disk"])),
        ("last merge", _when(st["last_merge"])), ("last rebuild", _when(st["last_rebuild"])),
    ]
    _print_rows(rows)
    for hint in st["hints"]:
        print(f"hint: {hint}")
    _print_jobs(st.get("jobs", []))


def _print_rows(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _print_jobs(jobs: Sequence[Json]) -> None:
    for job in jobs:
        total = f"/{job['total']:,}" if job["total"] is not None else ""
        running = job["state"] == "running" and job["message"]
        extra = f": {job['failure']}" if job["failure"] else (f" ({job['message']})" if running else "")
        print(one_line(f"job {job['id']}  {job['state']}  {job['done']:,}{total}  {job['description']}{extra}"))


def print_service_status(st: Json) -> None:
    """``service status``: the process, its clients and model, then its jobs."""
    m = st["model"]
    model = f"{m['name']} ({m['pretrained']}): {m['state']}"
    if m["seconds"] is not None:
        model += f" ({m['seconds']:.1f} s)"
    if m["error"]:
        model += f": {m['error']}"
    _print_rows([
        ("pid", str(st["pid"])), ("version", st["version"]), ("data dir", st["data_dir"]), ("socket", st["socket"]),
        ("log", st["log"]), ("started", _when(st["started"])), ("uptime", f"{st['uptime_s']:,.0f} s"),
        ("clients", ", ".join(st["clients"]) or "none"),
        ("idle", f"{st['idle_for_s']:,.0f} s of {st['idle_timeout_s']:,.0f} s"),
        ("memory (RSS)", _human_bytes(st["memory_rss_bytes"])), ("model", model),
        ("watching", ", ".join(one_line(f) for f in st.get("watching", [])) or "none"),
    ])
    _print_jobs(st["jobs"])


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_add_report(report: Json, maintenance: Sequence[Json], *, pruned: bool) -> None:
    """``index``: the counts, each skipped file with its reason, then any merge or rebuild that followed."""
    removed = f", removed (files gone) {len(report['removed_missing']):,}" if pruned else ""
    print(f"Added {len(report['added']):,}, unchanged {report['unchanged']:,}, replaced {len(report['replaced']):,}, "
          f"skipped {len(report['skipped']):,}{removed}")
    for item in report["skipped"]:
        print(f"  skipped {one_line(item['path'])}: {one_line(item['reason'])}")
    for m in maintenance:
        print(f"{m['operation']}: {m['moved']:,} vectors into {m['index']} (generation {m['generation']}) "
              f"in {m['seconds']:.1f} s")


def print_missing_inputs(paths: Sequence[str]) -> None:
    """The ``index`` inputs that do not exist, as a warning on stderr (the rest is indexed)."""
    print(f"warning: no such file or folder, nothing indexed from: {', '.join(one_line(p) for p in paths)}. "
          "Check the path (relative paths start from the current folder).", file=sys.stderr)


def print_remove_report(report: Json) -> None:
    removed = report["removed"]
    if report.get("dry_run"):
        shown = ", ".join(str(i) for i in removed[:50]) + (" ..." if len(removed) > 50 else "")
        print(f"Dry run: would remove {len(removed):,} image(s) (nothing removed): {shown}")
    else:
        print(f"Removed {len(removed):,} image(s): invisible to search now, dropped from disk at the next rebuild.")
    already = report.get("already_removed", [])
    if already:
        shown = ", ".join(str(i) for i in already[:50]) + (" ..." if len(already) > 50 else "")
        print(f"  already removed: {shown}")
    for item in report["not_found"]:
        print(f"  not found: {one_line(item)}")


def print_maintenance_report(op: str, report: Json) -> None:
    """``merge`` / ``rebuild`` (``op``): what moved where, and how long it took."""
    extra = f", dropped {report['dropped']:,} removed" if op == "rebuild" else ""
    print(f"{'Merged' if op == 'merge' else 'Rebuilt'}: {report['moved']:,} vectors{extra}; index {report['index']}, "
          f"generation {report['generation']}, {report['seconds']:.2f} s" + (" (trained)" if report["retrained"] else ""))


# -- the LLM commands ----------------------------------------------------------------------------
def print_notes(notes: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for note in notes:
        print(f"note: {one_line(note)}", file=out)


def print_rag_result(result: RagResult, out: TextIO | None = None) -> None:
    """``search --expand``: the queries searched, ranked results, the explanation, notes."""
    out = out or sys.stdout
    if len(result.expanded_queries) > 1:
        print("searched: " + " | ".join(one_line(q) for q in result.expanded_queries), file=out)
    if not result.results:
        print("no results", file=out)
    width = len(str(len(result.results)))
    many = len(result.expanded_queries) > 1
    for hit in result.results:
        matched = f"  ({len(hit.matched_queries)}/{len(result.expanded_queries)} queries)" if many else ""
        print(f"{hit.rank:>{width}}. {hit.score:.3f}  #{hit.id}  {one_line(hit.path)}{matched}", file=out)
    if result.ai_explanation:
        print("\n" + result.ai_explanation.strip(), file=out)
    print_notes(result.notes, out)


def print_qa_result(result: QAResult, out: TextIO | None = None) -> None:
    """``ask``: the answer followed by the images it rests on."""
    out = out or sys.stdout
    if result.answer:
        print(result.answer.strip() + "\n", file=out)
    print("sources:" if result.sources else "no images found", file=out)
    for source in result.sources:
        cited = "  (cited)" if source.cited else ""
        print(f"  [{source.label}] {source.score:.3f}  #{source.id}  {one_line(source.path)}{cited}", file=out)
    print_notes(result.notes, out)


def print_trace(turn: ChatTurn, out: TextIO | None = None) -> None:
    """One line per tool call of a chat turn (stderr by default)."""
    out = out or sys.stderr
    for call in turn.tool_calls:
        args = call.arguments if len(call.arguments) <= 200 else call.arguments[:200] + "..."
        outcome = "declined" if call.declined else ("error" if call.error else "ok")
        print(f"  [tool {call.round}] {one_line(call.name)}({one_line(args)}) -> {outcome}", file=out)


def print_turn(turn: ChatTurn, *, trace: bool) -> None:
    """A chat turn for people: the tool trace (when asked) and notes on stderr, the answer on stdout."""
    if trace:
        print_trace(turn)
    if turn.answer:
        print(turn.answer, flush=True)
    print_notes(turn.notes, sys.stderr)
