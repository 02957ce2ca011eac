"""The note commands: ``tag`` (add / remove / set tags), ``tags`` (tags with counts) and ``describe``
(set or clear a description, or have the LLM write them with ``--llm``).

Items are read as ``remove`` reads them: ASCII digits are an id, anything else a file or folder
path (a folder names every image indexed under it); digits that also name an existing path are
refused as ambiguous unless ``--id`` or ``--path`` says which.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from img_agent.cli import output
from img_agent.cli.context import CLIContext, add_llm_arguments
from img_agent.cli.store import follow_job_tool, image_items
from img_agent.errors import InvalidInputError
from img_agent.textsafe import one_line

COMMANDS = ("tag", "tags", "describe")
"""The commands this module adds."""

ITEMS_HELP = ("An item of ASCII digits is an image id, anything else a file or folder path (a folder names every "
              "image indexed under it); digits that also name an existing path need --id or --path.")


def _kind_flags(p: argparse.ArgumentParser) -> None:
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--id", dest="as_ids", action="store_true", help="every item is an image id")
    kind.add_argument("--path", dest="as_paths", action="store_true", help="every item is a file or folder path")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``tag``, ``tags`` and ``describe`` (``common``: the parser of the global options)."""
    p = subparsers.add_parser("tag", parents=[common], help="add, remove or set tags of images (ids, files, folders)",
                              description="Change the tags of images. " + ITEMS_HELP + " Tags are 1-64 characters, "
                              "compared case-insensitively. Order: --set/--clear, then --remove, then --add.")
    p.add_argument("items", nargs="+", metavar="ID|PATH")
    p.add_argument("--add", action="append", default=[], metavar="TAG", help="add this tag (repeatable)")
    p.add_argument("--remove", action="append", default=[], metavar="TAG", help="take this tag away (repeatable)")
    p.add_argument("--set", dest="set_tags", action="append", default=None, metavar="TAG",
                   help="replace the tags by exactly these (repeatable)")
    p.add_argument("--clear", action="store_true", help="remove every tag (with --add: replace them)")
    _kind_flags(p)
    p.set_defaults(func=cmd_tag)

    p = subparsers.add_parser("tags", parents=[common], help="list the tags in use, with counts")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N tags (default 200)")
    p.set_defaults(func=cmd_tags)

    p = subparsers.add_parser(
        "describe", parents=[common], help="set or clear descriptions, or have the LLM write them (--llm)",
        description="Set (--text) or clear (--clear) the description of images, or with --llm have the configured "
        "multimodal LLM describe images that have none (all indexed ones when no item is given), at most --limit "
        "per run; run again to go on. " + ITEMS_HELP)
    p.add_argument("items", nargs="*", metavar="ID|PATH")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", default=None, help="the description to set")
    what.add_argument("--clear", action="store_true", help="remove the description")
    what.add_argument("--llm", action="store_true", help="let the configured LLM write descriptions")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="with --llm: at most N images (default 20)")
    p.add_argument("--overwrite", action="store_true", help="with --llm: also redo images that have a description")
    _kind_flags(p)
    add_llm_arguments(p)
    p.set_defaults(func=cmd_describe)


def _targets(ctx: CLIContext) -> dict[str, Any]:
    ids, paths = image_items(ctx.args.items, as_ids=ctx.args.as_ids, as_paths=ctx.args.as_paths)
    return {"ids": ids or None, "paths": paths or None}


def cmd_tag(ctx: CLIContext) -> int:
    args = ctx.args
    replace = args.set_tags if args.set_tags is not None else ([] if args.clear else None)
    if args.clear and args.set_tags is not None:
        raise InvalidInputError("Give --set or --clear, not both (--set already replaces every tag).")
    if not args.add and not args.remove and replace is None:
        raise InvalidInputError("Nothing to do: give --add, --remove, --set or --clear.")
    report = ctx.call("tag_images", **_targets(ctx), add=args.add or None, remove=args.remove or None, replace=replace)
    ctx.emit(report, lambda: print_note_report("Tags", report))
    return 0


def cmd_tags(ctx: CLIContext) -> int:
    result = ctx.call("list_tags", limit=ctx.args.limit)
    ctx.emit(result, lambda: print_tag_list(result))
    return 0


def cmd_describe(ctx: CLIContext) -> int:
    args = ctx.args
    if args.llm:
        return _describe_with_llm(ctx)
    if not args.items:
        raise InvalidInputError("Name the images to describe (ids, files or folders), or use --llm.")
    if args.limit is not None or args.overwrite:
        raise InvalidInputError("--limit and --overwrite go with --llm.")
    report = ctx.call("set_description", **_targets(ctx), description=args.text, clear=args.clear)
    ctx.emit(report, lambda: print_note_report("Description", report))
    return 0


def _describe_with_llm(ctx: CLIContext) -> int:
    """Run describe_images as a job followed with a progress bar; Ctrl-C cancels it (keeping what it wrote)."""
    args = ctx.args
    arguments: dict[str, Any] = {**(_targets(ctx) if args.items else {}), "limit": args.limit,
                                 "overwrite": args.overwrite}
    bar = output.progress_bar("describing")
    try:
        if not ctx.remote:
            report = ctx.local_tools().describe_images(**arguments, progress=bar).model_dump(mode="json")
        else:
            report = follow_job_tool(ctx, "describe_images", arguments, bar, what="describing")
    finally:
        bar.close()
    ctx.emit(report, lambda: print_describe_report(report))
    return 0


# -- output ----------------------------------------------------------------------------------------
def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids[:50]) + (" ..." if len(ids) > 50 else "")


def print_note_report(what: str, report: dict[str, Any]) -> None:
    """``tag`` / ``describe --text``: the ids changed and unchanged, then what matched nothing."""
    print(f"{what} changed on {len(report['changed']):,} image(s)" + (f": {_ids(report['changed'])}" if report["changed"]
                                                                      else "") + ".")
    if report["unchanged"]:
        print(f"  already so (nothing to do): {_ids(report['unchanged'])}")
    for item in report["not_found"]:
        print(f"  not found: {one_line(item)}")


def print_tag_list(result: dict[str, Any]) -> None:
    """``tags``: count and tag per row, most used first."""
    tags = result["tags"]
    if not tags:
        print("No tags yet; add some with 'img-agent tag ID|PATH --add TAG'.")
    else:
        width = max(5, len(f"{tags[0]['count']:,}"))
        print(f"{'count':>{width}}  tag")
        for item in tags:
            print(f"{item['count']:>{width},}  {one_line(item['tag'])}")
        if result["total_tags"] > len(tags):
            print(f"... {result['total_tags'] - len(tags):,} more (--limit N shows more)")
    print(f"{result['images_without_description']:,} image(s) have no description.")


def print_describe_report(report: dict[str, Any]) -> None:
    """``describe --llm``: what was described, what failed and why, and what is left."""
    print(f"Described {len(report['described']):,} image(s)" + (" (cancelled)" if report["cancelled"] else "") + ".")
    for item in report["failed"]:
        print(f"  failed {item['id']}: {one_line(item['reason'])}")
    for item in report["not_found"]:
        print(f"  not found: {one_line(item)}")
    if report["remaining"]:
        print(f"{report['remaining']:,} image(s) still have no description; run again to go on.")
    output.print_notes(report["notes"])
