"""The store commands: ``index``, ``search``, ``remove``, ``merge``, ``rebuild``, ``status``."""

from __future__ import annotations

import argparse
from pathlib import Path

from img_agent.cli import agent, output
from img_agent.cli.context import CLIContext
from img_agent.errors import InvalidInputError
from img_agent.results import SearchFilter


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the store commands (``common``: the parser of the global options)."""
    p = subparsers.add_parser("index", parents=[common], help="index image files and folders (recursive)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    p.add_argument("--prune", action="store_true", help="remove indexed images whose files vanished from these folders")
    p.add_argument("--no-maintain", action="store_true", help="skip the merge/rebuild advised after adding")
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser("search", parents=[common], help="search by text, by image file or by an indexed id")
    p.add_argument("text", nargs="?", help="text query")
    p.add_argument("--image", metavar="PATH", help="query image file")
    p.add_argument("--similar", type=int, metavar="ID", help="images like this indexed one")
    p.add_argument("-k", "--top", dest="k", type=int, default=None, help="number of results (default 20)")
    p.add_argument("--prefix", help="only paths starting with this")
    p.add_argument("--glob", help="only paths matching this glob, e.g. '*/2024/*.jpg'")
    p.add_argument("--expand", action="store_true", help="LLM query expansion + fusion + explanation")
    agent.add_rag_arguments(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("remove", parents=[common], help="remove images by id, file path or folder")
    p.add_argument("items", nargs="+", metavar="ID|PATH")
    p.set_defaults(func=cmd_remove)

    p = subparsers.add_parser("merge", parents=[common], help="merge the buffer into the main index (no retraining)")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser("rebuild", parents=[common], help="retrain the index on live images; drops removed ones")
    p.add_argument("--index-string", default=None, help="faiss factory string for this rebuild (default: configured)")
    p.set_defaults(func=cmd_rebuild)

    p = subparsers.add_parser("status", parents=[common], help="counts, index type, model, disk use and advice")
    p.set_defaults(func=cmd_status)


def cmd_index(ctx: CLIContext) -> int:
    """Add the files and folders, then run the merge or rebuild the store advises (unless --no-maintain)."""
    args = ctx.args
    eng = ctx.engine()
    bar = output.progress_bar("indexing")
    try:
        report = eng.add_paths(args.paths, recursive=not args.no_recursive, remove_missing=args.prune, progress=bar)
    finally:
        bar.close()
    maintenance = []
    if eng.settings.auto_rebuild and not args.no_maintain:
        bar = output.progress_bar("optimising index")
        try:
            maintenance = eng.maintain(progress=bar)
        finally:
            bar.close()
    ctx.emit({"report": report, "maintenance": maintenance},
             lambda: output.print_add_report(report, maintenance, pruned=args.prune))
    return 0


def cmd_search(ctx: CLIContext) -> int:
    """One of: TEXT, --image PATH, --similar ID; ``--expand`` hands a text query to the LLM recipe."""
    args = ctx.args
    given = [x for x in (args.text, args.image, args.similar) if x is not None]
    if len(given) != 1:
        raise InvalidInputError("Give exactly one of: TEXT, --image PATH, --similar ID.")
    flt = SearchFilter.of(args.prefix, args.glob)
    if args.expand:
        if args.text is None:
            raise InvalidInputError("--expand works with a text query.")
        return agent.run_rag_search(ctx, args.text, args.k, flt)
    eng = ctx.engine()
    if args.text is not None:
        hits = eng.search_text(args.text, args.k, flt)
    elif args.image is not None:
        hits = eng.search_image(Path(args.image), args.k, flt)
    else:
        hits = eng.search_similar(args.similar, args.k, flt)
    ctx.emit(hits, lambda: output.print_hits(hits))
    return 0


def cmd_remove(ctx: CLIContext) -> int:
    """Items that are all digits are ids; anything else is a file or folder path."""
    ids = [int(item) for item in ctx.args.items if item.isdigit()]
    paths = [item for item in ctx.args.items if not item.isdigit()]
    report = ctx.engine().remove(ids=ids, paths=paths)
    ctx.emit(report, lambda: output.print_remove_report(report))
    return 0


def cmd_merge(ctx: CLIContext) -> int:
    eng = ctx.engine()
    bar = output.progress_bar("merge")
    try:
        report = eng.merge(progress=bar)
    finally:
        bar.close()
    ctx.emit(report, lambda: output.print_maintenance_report("merge", report))
    return 0


def cmd_rebuild(ctx: CLIContext) -> int:
    eng = ctx.engine()
    bar = output.progress_bar("rebuild")
    try:
        report = eng.rebuild(progress=bar, index_string=ctx.args.index_string)
    finally:
        bar.close()
    ctx.emit(report, lambda: output.print_maintenance_report("rebuild", report))
    return 0


def cmd_status(ctx: CLIContext) -> int:
    st = ctx.engine().status()
    ctx.emit(st, lambda: output.print_status(st))
    return 0
