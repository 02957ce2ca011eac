"""``img-agent watch DIR...``: keep indexed folders in step with their files until stopped.

The folders are indexed once (catching up: new and changed files are added, vanished ones dropped),
then watched: each settled batch of changes goes to the ``sync_paths`` tool, through the store's
service (or in this process with ``--no-service``), and becomes one line of output. Ctrl-C or SIGTERM
stops it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from img_agent.errors import ImgAgentError
from img_agent.textsafe import one_line
from img_agent.tools.limits import MAX_PATHS_PER_CALL

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

COMMANDS = ("watch",)
"""The commands this module adds."""

MAX_LISTED_SKIPS = 20


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``watch`` (``common``: the parser of the global options)."""
    from img_agent.index.watch import DEFAULT_DEBOUNCE_S

    p = subparsers.add_parser(
        "watch", parents=[common], help="index folders, then keep the index in step with their files",
        description="Index the folders (adding new and changed images, dropping vanished ones), then watch them "
        "recursively: created, changed and moved-in images are added, deleted and moved-out ones dropped, "
        "once the files have been quiet for --debounce seconds. Images removed with 'img-agent remove' stay "
        "removed ('img-agent index FILE' brings one back). One line per batch of changes; Ctrl-C stops.",
    )
    p.add_argument("folders", nargs="+", metavar="DIR", help="folder to watch (with its sub-folders)")
    p.add_argument("--debounce", type=float, default=DEFAULT_DEBOUNCE_S, metavar="SECONDS",
                   help=f"seconds without file events before changes are applied (default {DEFAULT_DEBOUNCE_S:g})")
    p.set_defaults(func=cmd_watch)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the watch as Ctrl-C does."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary(report: dict[str, Any]) -> str:
    parts = [f"added {len(report['added']):,}"]
    if report["replaced"]:
        parts.append(f"replaced {len(report['replaced']):,}")
    parts.append(f"removed {len(report['removed_missing']):,}")
    if report["unchanged"]:
        parts.append(f"unchanged {report['unchanged']:,}")
    parts.append(f"skipped {len(report['skipped']):,}")
    return ", ".join(parts)


def _print_report(prefix: str, report: dict[str, Any], *, as_json: bool, event: str) -> None:
    if as_json:
        print(json.dumps({"event": event, "time": time.time(), "report": report}, ensure_ascii=False), flush=True)
        return
    print(f"{time.strftime('%H:%M:%S')} {prefix}{_summary(report)}", flush=True)
    skipped = report["skipped"]
    for item in skipped[:MAX_LISTED_SKIPS]:
        print(f"  skipped {one_line(item['path'])}: {one_line(item['reason'])}", flush=True)
    if len(skipped) > MAX_LISTED_SKIPS:
        print(f"  ... and {len(skipped) - MAX_LISTED_SKIPS:,} more skipped", flush=True)


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"added": [], "added_paths": [], "replaced": [], "removed_missing": [], "skipped": [],
                           "unchanged": 0}
    for r in reports:
        for key in ("added", "added_paths", "replaced", "removed_missing", "skipped"):
            out[key] += r[key]
        out["unchanged"] += r["unchanged"]
    return out


def cmd_watch(ctx: CLIContext) -> int:
    """Catch up, then apply each batch of changes until Ctrl-C or SIGTERM."""
    from img_agent.cli.store import _absolute, _add
    from img_agent.index.watch import FolderWatch

    args = ctx.args
    folders = [_absolute(f) for f in args.folders]
    watch = FolderWatch(folders, debounce=args.debounce)  # checks the folders before anything runs
    shown = ", ".join(one_line(str(f)) for f in watch.folders)
    try:
        with _sigterm_interrupts(), watch:  # observing before catching up: no change falls in between
            caught_up = _add(ctx, [str(f) for f in watch.folders], recursive=True, prune=True)
            _print_report("caught up: ", caught_up, as_json=ctx.json, event="catch-up")
            if not ctx.json:
                print(f"watching {shown} (Ctrl-C stops)", flush=True)
            for batch in watch.batches():
                reports = []
                try:
                    for start in range(0, len(batch), MAX_PATHS_PER_CALL):
                        reports.append(ctx.call("sync_paths", paths=batch[start:start + MAX_PATHS_PER_CALL]))
                except ImgAgentError as exc:  # the next change tries again; the watch goes on
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                if reports:
                    _print_report("", _merge(reports), as_json=ctx.json, event="changes")
    except KeyboardInterrupt:
        pass
    if not ctx.json:
        print(f"stopped watching {shown}", file=sys.stderr, flush=True)
    return 0

