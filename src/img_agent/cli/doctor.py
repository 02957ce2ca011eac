"""The store-care commands: ``doctor`` (diagnose, read-only), ``repair``, ``backup DEST`` and ``migrate --to URI``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

COMMANDS = ("doctor", "repair", "backup", "migrate")
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``doctor``, ``repair`` and ``backup`` (``common``: the parser of the global options)."""
    p = subparsers.add_parser("doctor", parents=[common], help="check every file of the store (changes nothing)",
                              description="Check the store's files, catalog, checksums and vectors; print what is "
                              "wrong and how to fix it. Exit status 1 when something is wrong.")
    p.set_defaults(func=cmd_doctor)
    p = subparsers.add_parser("repair", parents=[common], help="fix what doctor finds (moves bad files to lost+found)",
                              description="Stop the store's service, then repair the store: nothing is deleted; "
                              "unusable files go to DATA_DIR/lost+found/<time>/, images whose vectors were lost are "
                              "removed and their files listed for re-indexing.")
    p.set_defaults(func=cmd_repair)
    p = subparsers.add_parser("backup", parents=[common], help="copy the store consistently into a new folder",
                              description="Copy the store into DEST (a new or empty folder) while it keeps serving: "
                              "adds wait during the copy, searches go on. The copy is a store of its own.")
    p.add_argument("dest", metavar="DEST", help="new or empty folder for the copy")
    p.set_defaults(func=cmd_backup)
    p = subparsers.add_parser("migrate", parents=[common], help="move the store's vectors to Milvus, or back to faiss",
                              description="Stop the store's service, then move the vectors: to a Milvus URI (copied "
                              "in batches, ids kept; interrupted, it resumes where it stopped when run again) or "
                              "back to 'faiss' (an index trained on the store's own vector file). The store "
                              "switches over at the end; the next command starts the service on the new store.")
    p.add_argument("--to", required=True, metavar="URI",
                   help="'faiss', a Milvus Lite file such as ~/images/milvus.db, or http(s)://host:19530")
    p.set_defaults(func=cmd_migrate)


def _data_dir(ctx: CLIContext) -> Path:
    return ctx.settings().data_dir


def cmd_doctor(ctx: CLIContext) -> int:
    from img_agent.index.doctor import diagnose

    report = diagnose(_data_dir(ctx))
    ctx.emit(report, lambda: _print_findings(report.data_dir, report.ok, report.findings))
    return 0 if report.ok else 1


def cmd_repair(ctx: CLIContext) -> int:
    from img_agent.index.repair import repair

    stopped = ctx.service().stop()  # the service holds the store's lock
    if stopped is not None and not ctx.json:
        print(f"Stopped the store's service (pid {stopped.pid}); the next command starts it again.", file=sys.stderr)
    report = repair(_data_dir(ctx))

    def human() -> None:
        for action in report.actions:
            print(f"- {action}")
        if report.reindex:
            print(f"Index these {len(report.reindex)} files again (their vectors were lost):")
            for path in report.reindex:
                print(f"  {path}")
        if report.lost_and_found:
            print(f"Files set aside (nothing was deleted): {report.lost_and_found}")
        if report.remaining:
            _print_findings(report.data_dir, False, report.remaining)
        else:
            print(f"The store at {report.data_dir} is sound.")

    ctx.emit(report, human)
    return 1 if report.remaining else 0


def cmd_backup(ctx: CLIContext) -> int:
    dest = str(Path(ctx.args.dest).expanduser().absolute())
    if ctx.remote:
        result: dict[str, Any] = ctx.client().request("POST", "/api/store/backup", {"dest": dest})
    else:
        result = ctx.engine().backup(dest).model_dump(mode="json")
    ctx.emit(result, lambda: print(
        f"Backed up {result['images']:,} images ({result['rows']:,} vectors, index generation {result['generation']}, "
        f"{result['bytes'] / 1e6:.1f} MB) to {result['dest']} in {result['seconds']:.1f} s."))
    return 0


def cmd_migrate(ctx: CLIContext) -> int:
    from img_agent.cli import output
    from img_agent.index.engine import Engine

    stopped = ctx.service().stop()  # the service holds the store's lock
    if stopped is not None and not ctx.json:
        print(f"Stopped the store's service (pid {stopped.pid}); the next command starts it again.", file=sys.stderr)
    bar = output.progress_bar("migrating")
    # the store opens with the vector store it has, whatever IMG_AGENT_VECTOR_STORE says
    with Engine.open(ctx.settings().model_copy(update={"vector_store": None})) as engine:
        try:
            report = engine.migrate(ctx.args.to, progress=bar)
        finally:
            bar.close()
    ctx.emit(report, lambda: print(
        f"Moved {report.images:,} images from {report.source} to {report.target}"
        + (f" ({report.copied:,} copied by this run, resuming at id {report.resumed_from})" if report.resumed_from
           else "") + f"; index: {report.index or 'none yet'}; {report.seconds:.1f} s."))
    return 0


def _print_findings(data_dir: str, ok: bool, findings: list[Any]) -> None:
    print(f"{data_dir}: {'sound' if ok else 'PROBLEMS FOUND'}")
    for f in findings:
        print(f"{f.severity:>7}: {f.what}")
        if f.fix:
            print(f"         fix: {f.fix}")
