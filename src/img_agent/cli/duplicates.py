"""The ``duplicates`` command: groups of near-duplicate images, each with its suggested keeper.

It runs the ``find_duplicates`` tool; ``--remove-extras`` then removes every image but each group's
keeper through the ``remove_images`` tool (index entries only; files are never touched).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img_agent.cli import output
from img_agent.textsafe import one_line

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

COMMANDS = ("duplicates",)
"""The commands this module adds."""
CLI_MAX_GROUPS = 1000
"""Groups the command lists (the tool's most); the totals count every group."""
REMOVE_BATCH = 10_000
"""Ids per remove_images call (the tool's most)."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``duplicates`` (``common``: the parser of the global options)."""
    p = subparsers.add_parser(
        "duplicates", parents=[common], help="find near-duplicate images (resized, re-encoded, cropped copies)",
        description="List groups of indexed images whose CLIP embeddings have cosine similarity at or above the "
        "threshold, largest group first, the suggested keeper of each marked with '*' (most pixels, then largest "
        "file, then oldest, then smallest id). Changes nothing unless --remove-extras is given.",
    )
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="only compare images indexed under this folder")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="cosine similarity from which images count as duplicates, above 0 and at most 1 "
                   "(default 0.95)")
    p.add_argument("--remove-extras", action="store_true",
                   help="after listing, remove every image but each group's keeper from the index (files stay)")
    p.set_defaults(func=cmd_duplicates)


def cmd_duplicates(ctx: CLIContext) -> int:
    """List the groups; with ``--remove-extras`` remove every non-keeper and report what was removed."""
    args = ctx.args
    arguments: dict[str, Any] = {"threshold": args.threshold, "max_groups": CLI_MAX_GROUPS,
                                 "folder": str(Path(args.folder).expanduser().absolute()) if args.folder else None}
    report = _find(ctx, arguments)
    removed: dict[str, Any] | None = None
    if args.remove_extras:
        extras = [i for group in report["groups"] for i in group["extras"]]
        removed = _remove(ctx, extras)
    ctx.emit({"duplicates": report, "removed": removed} if args.remove_extras else report,
             lambda: print_duplicates(report, removed))
    return 0


def _find(ctx: CLIContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """The tool's report: in this process with a progress bar, or through the store's service."""
    if ctx.remote:
        return ctx.call("find_duplicates", **arguments)
    from img_agent.tools.image_tools import get_spec

    bar = output.progress_bar("comparing")
    try:
        spec = get_spec("find_duplicates")
        return spec.call(ctx.local_tools(), spec.parse(arguments), progress=bar).model_dump(mode="json")
    finally:
        bar.close()


def _remove(ctx: CLIContext, ids: list[int]) -> dict[str, Any]:
    """Remove ``ids`` through remove_images (in batches the tool accepts); the merged report."""
    merged: dict[str, Any] = {"removed": [], "already_removed": [], "not_found": [], "dry_run": False}
    for start in range(0, len(ids), REMOVE_BATCH):
        part = ctx.call("remove_images", ids=ids[start : start + REMOVE_BATCH])
        for key in ("removed", "already_removed", "not_found"):
            merged[key] += part[key]
    return merged


def print_duplicates(report: dict[str, Any], removed: dict[str, Any] | None) -> None:
    """The groups, keeper first and marked '*', then the totals and what was removed."""
    where = f" under {one_line(report['folder'])}" if report["folder"] else ""
    if not report["groups"]:
        print(f"No duplicates among {report['compared']:,} images{where} at threshold {report['threshold']}.")
    for number, group in enumerate(report["groups"], start=1):
        print(f"group {number}: {len(group['images'])} images")
        for image in group["images"]:
            mark = "*" if image["keeper"] else " "
            print(f"  {mark} {image['id']:>7}  {image['similarity']:.4f}  {image['width']}x{image['height']}  "
                  f"{image['size']:>10,} B  {one_line(image['path'])}")
    if report["groups"]:
        shown = f" (showing the largest {len(report['groups']):,})" if report["truncated"] else ""
        print(f"{report['total_groups']:,} groups, {report['total_extras']:,} extra images among "
              f"{report['compared']:,} images{where} at threshold {report['threshold']}{shown}; * = suggested keeper.")
    if report["cancelled"]:
        print("note: stopped before every image was compared; the groups may be incomplete.")
    if removed is not None:
        ids = removed["removed"]
        listed = ", ".join(str(i) for i in ids[:50]) + (" ..." if len(ids) > 50 else "")
        print(f"Removed {len(ids):,} extra image(s) from the index (files untouched): {listed or 'none'}")
        if report["truncated"]:
            print("note: only the listed groups were handled; run the command again for the rest.")
