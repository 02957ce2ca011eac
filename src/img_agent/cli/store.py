"""The store commands: ``index``, ``search``, ``remove``, ``merge``, ``rebuild``, ``status``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from img_agent.cli import agent, output
from img_agent.cli.context import CLIContext
from img_agent.cli.filters import add_filter_arguments, filter_from_args, where_argument
from img_agent.cli.terms import search_terms
from img_agent.errors import ImgAgentError, InvalidInputError, NotFoundError
from img_agent.textsafe import one_line


COMMANDS = ('index', 'search', 'remove', 'merge', 'rebuild', 'status')
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the store commands (``common``: the parser of the global options)."""
    p = subparsers.add_parser("index", parents=[common], help="index image files and folders (recursive)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    p.add_argument("--prune", action="store_true", help="remove indexed images whose files vanished from these folders")
    p.add_argument("--no-maintain", action="store_true", help="skip the merge/rebuild advised after adding")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode on a Ray cluster: 'auto', 'host:6379' or 'ray://host:10001'; alone, a Ray started on "
                        "this machine (this command then holds the store: its service is stopped)")
    p.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="encoder actors on Ray (default: one per GPU of the cluster, else one per node)")
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser("search", parents=[common], help="search by text, by image file or by an indexed id")
    p.add_argument("text", nargs="?", help="text query; a leading 'N:' weights it, e.g. '2:golden retriever'")
    p.add_argument("--image", metavar="PATH", help="query image file")
    p.add_argument("--similar", type=int, metavar="ID", help="images like this indexed one")
    p.add_argument("--add", action="append", metavar="TERM", help="add a term: text, or an image file's path; "
                   "repeatable; a leading 'N:' is a weight, e.g. '2:golden retriever' (see README)")
    p.add_argument("--subtract", action="append", metavar="TERM", help="subtract a term (as --add), e.g. fruit")
    p.add_argument("-k", "--top", dest="k", type=int, default=None, help="number of results (default 20)")
    p.add_argument("--collapse-duplicates", action="store_true",
                   help="fold near-duplicates of a better hit into it: k different pictures")
    add_filter_arguments(p)
    p.add_argument("--expand", action="store_true", help="LLM query expansion + fusion + explanation")
    agent.add_rag_arguments(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser(
        "remove", parents=[common], help="remove images by id, file path or folder",
        description="Remove images from the index (files are never touched). An item of ASCII digits is an id, "
        "anything else a file or folder path; digits that also name an existing path are refused as ambiguous "
        "unless --id or --path says which.",
    )
    p.add_argument("items", nargs="+", metavar="ID|PATH")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--id", dest="as_ids", action="store_true", help="every item is an image id")
    kind.add_argument("--path", dest="as_paths", action="store_true", help="every item is a file or folder path")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, removing nothing")
    p.set_defaults(func=cmd_remove)

    p = subparsers.add_parser("merge", parents=[common], help="merge the buffer into the main index (no retraining)")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser("rebuild", parents=[common], help="retrain the index on live images; drops removed ones")
    p.add_argument("--index-string", default=None, help="faiss factory string for this rebuild (default: configured); on "
                   "a Milvus store: auto, FLAT, IVF_FLAT, IVF_SQ8 or HNSW")
    p.set_defaults(func=cmd_rebuild)

    p = subparsers.add_parser("status", parents=[common], help="counts, index type, model, disk use and advice")
    p.set_defaults(func=cmd_status)


def _absolute(path: str) -> str:
    """A path as the user meant it from this shell (the service runs elsewhere)."""
    return str(Path(path).expanduser().absolute())


JOB_POLL_S = 0.2


def _add(ctx: CLIContext, paths: list[str], *, recursive: bool, prune: bool) -> dict[str, Any]:
    """Index through the tools: a job followed with a progress bar; Ctrl-C cancels it (keeping what it added)."""
    bar = output.progress_bar("indexing")
    try:
        if not ctx.remote:
            report = ctx.local_tools().add_images(paths, recursive=recursive, prune=prune, progress=bar)
            return report.model_dump(mode="json")
        # the job's report already lists the paths refused before it started
        return follow_job_tool(ctx, "add_images", {"paths": paths, "recursive": recursive, "prune": prune}, bar,
                               what="indexing")
    finally:
        bar.close()


def follow_job_tool(ctx: CLIContext, name: str, arguments: dict[str, Any], bar: Any, *, what: str) -> dict[str, Any]:
    """Call a job-running tool through the service without waiting, follow its job with ``bar``, and return
    its final report; Ctrl-C cancels the job (keeping what it did)."""
    client = ctx.client()
    started = client.call_tool(name, {**arguments, "wait": False})
    job = started["job"]
    if job is None:  # nothing to do, or finished within the call
        return started
    try:
        while job["state"] == "running":
            bar(job["done"], job["total"], job["message"])
            time.sleep(JOB_POLL_S)
            job = client.request("GET", f"/api/jobs/{job['id']}")
    except KeyboardInterrupt:
        client.request("POST", f"/api/jobs/{job['id']}/cancel", {})
        raise
    bar(job["done"], job["total"], job["message"])
    if job["state"] == "failed":
        raise ImgAgentError(job["failure"] or f"{what} failed; see 'img-agent service status' and its log.")
    return job["result"]


def cmd_index(ctx: CLIContext) -> int:
    """Add the files and folders, then run the merge or rebuild the store advises (unless --no-maintain)."""
    args = ctx.args
    paths = [_absolute(p) for p in args.paths]
    missing = [p for p in paths if not Path(p).exists()]
    if len(missing) == len(paths):
        raise NotFoundError(
            f"Nothing to index: no such file or folder: {', '.join(one_line(p) for p in missing)}. "
            "Check the path (relative paths start from the current folder)."
        )
    if missing:  # the inputs that exist are indexed; the missing ones are named on stderr and listed as skipped
        output.print_missing_inputs(missing)
    if args.ray is not None:
        return _index_on_ray(ctx, paths)
    report = _add(ctx, paths, recursive=not args.no_recursive, prune=args.prune)
    maintenance = []
    if ctx.settings().auto_rebuild and not args.no_maintain:
        status = ctx.call("index_status")
        if status["rebuild_advised"]:
            maintenance.append(ctx.call("rebuild_index"))
        elif status["merge_advised"]:
            maintenance.append(ctx.call("merge_buffer"))
    ctx.emit({"report": report, "maintenance": maintenance},
             lambda: output.print_add_report(report, maintenance, pruned=args.prune))
    return 0


def _index_on_ray(ctx: CLIContext, paths: list[str]) -> int:
    """``index --ray``: this process opens the store (stopping its service) and drives the Ray job."""
    import sys

    from img_agent.index.ray_ingest import RayCluster

    args = ctx.args
    if args.ray_actors is not None and args.ray_actors < 1:
        raise InvalidInputError(f"--ray-actors must be 1 or more; got {args.ray_actors}.")
    stopped = ctx.service().stop()  # the service holds the store's lock
    if stopped is not None and not ctx.json:
        print(f"Stopped the store's service (pid {stopped.pid}); the next command starts it again.", file=sys.stderr)
    engine = ctx.engine()
    cluster = RayCluster(None if args.ray == "local" else args.ray, args.ray_actors)
    bar = output.progress_bar("indexing on Ray")
    try:
        report = engine.add_paths(paths, recursive=not args.no_recursive, remove_missing=args.prune, progress=bar,
                                  ray=cluster).model_dump(mode="json")
    finally:
        bar.close()
    maintenance = [] if args.no_maintain else [r.model_dump(mode="json") for r in engine.maintain()]
    ctx.emit({"report": report, "maintenance": maintenance},
             lambda: output.print_add_report(report, maintenance, pruned=args.prune))
    return 0


def cmd_search(ctx: CLIContext) -> int:
    """One of: TEXT, --image PATH, --similar ID; ``--expand`` hands a text query to the LLM recipe. Weights,
    ``--add``/``--subtract`` or more than one of them make a combined search (:mod:`img_agent.cli.terms`)."""
    args = ctx.args
    terms = search_terms(args.text, args.image, args.similar, args.add, args.subtract)
    given = [x for x in (args.text, args.image, args.similar) if x is not None]
    if len(given) != 1 and terms is None:
        raise InvalidInputError("Give exactly one of: TEXT, --image PATH, --similar ID, or combine terms with "
                                "--add/--subtract.")
    flt = filter_from_args(args)
    collapse = {"collapse_duplicates": True} if args.collapse_duplicates else {}
    if terms is not None:
        if args.expand:
            raise InvalidInputError("--expand works with one plain text query, not with combined terms.")
        hits = ctx.call("search_combined", terms=terms, k=args.k, where=where_argument(flt), **collapse)["hits"]
        ctx.emit(hits, lambda: output.print_hits(hits))
        return 0
    if args.expand:
        if args.text is None:
            raise InvalidInputError("--expand works with a text query.")
        if args.collapse_duplicates:
            raise InvalidInputError("--collapse-duplicates works with plain and combined searches, not with --expand.")
        return agent.run_rag_search(ctx, args.text, args.k, flt)
    where = {"k": args.k, "where": where_argument(flt), **collapse}
    if args.text is not None:
        result = ctx.call("search_by_text", query=args.text, **where)
    elif args.image is not None:
        result = ctx.call("search_by_image", path=_absolute(args.image), **where)
    else:
        result = ctx.call("search_by_image", image_id=args.similar, **where)
    hits = result["hits"]
    ctx.emit(hits, lambda: output.print_hits(hits))
    return 0


def _is_id(item: str) -> bool:
    """Only ASCII digits make an id ('²' or '٣' are names)."""
    return item.isascii() and item.isdigit()


def image_items(items: Sequence[str], *, as_ids: bool = False, as_paths: bool = False) -> tuple[list[int], list[str]]:
    """(ids, absolute paths) the ``remove`` items name.

    Raises:
        InvalidInputError: with ``--id``, an item that is not an id; without ``--id``/``--path``, digits
            that also name an existing file or folder (both readings are named).
    """
    if as_paths:
        return [], [_absolute(item) for item in items]
    if as_ids:
        bad = [item for item in items if not _is_id(item)]
        if bad:
            raise InvalidInputError(f"With --id every item must be an image id (ASCII digits); not ids: "
                                    f"{', '.join(repr(b) for b in bad)}. Drop --id to name paths.")
        return [int(item) for item in items], []
    ambiguous = [item for item in items if _is_id(item) and Path(item).expanduser().exists()]
    if ambiguous:
        readings = "; ".join(f"{item!r} is image id {item} and also the path {_absolute(item)}" for item in ambiguous)
        raise InvalidInputError(f"Ambiguous: {readings}. Add --id to mean the id or --path to mean the path.")
    return [int(item) for item in items if _is_id(item)], [_absolute(item) for item in items if not _is_id(item)]


def cmd_remove(ctx: CLIContext) -> int:
    """Items of ASCII digits are ids, anything else a file or folder path (``--id`` / ``--path`` decide)."""
    args = ctx.args
    ids, paths = image_items(args.items, as_ids=args.as_ids, as_paths=args.as_paths)
    report = ctx.call("remove_images", ids=ids or None, paths=paths or None, dry_run=args.dry_run)
    ctx.emit(report, lambda: output.print_remove_report(report))
    return 0


def cmd_merge(ctx: CLIContext) -> int:
    report = ctx.call("merge_buffer")
    ctx.emit(report, lambda: output.print_maintenance_report("merge", report))
    return 0


def cmd_rebuild(ctx: CLIContext) -> int:
    report = ctx.call("rebuild_index", index_string=ctx.args.index_string)
    ctx.emit(report, lambda: output.print_maintenance_report("rebuild", report))
    return 0


def cmd_status(ctx: CLIContext) -> int:
    st = ctx.call("index_status")
    ctx.emit(st, lambda: output.print_status(st))
    return 0
