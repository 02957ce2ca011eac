"""The ``img-agent`` command line: a thin adapter over the engine, for people and scripts.

Global options (``--data-dir``, ``--model``, ``--pretrained``, ``--device``, ``--json``, ``-v``)
work before or after the command. Settings come from flags > environment / ``.env`` > defaults.
Only this module prints and exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from img_agent import __version__
from img_agent.errors import ImgAgentError

log = logging.getLogger("img_agent")

# flag name -> Settings field, for the options every command shares
_GLOBAL_SETTINGS = ("data_dir", "model", "pretrained", "device")
# modules adding their own commands with register(subparsers, common_options)
_SURFACES = ("img_agent.cli.tools", "img_agent.cli.agent", "img_agent.cli.bench")


class CLIContext:
    """What a command handler gets: parsed args, settings built once, an engine opened on demand."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._settings = None
        self._engine = None

    def settings(self, **overrides: Any):
        """Settings from flags > env/.env > defaults; ``overrides`` are further flags of a command."""
        from img_agent.config import Settings

        if self._settings is None or overrides:
            given = {k: getattr(self.args, k) for k in _GLOBAL_SETTINGS if getattr(self.args, k, None) is not None}
            given.update({k: v for k, v in overrides.items() if v is not None})
            try:
                self._settings = Settings(**given)
            except ValidationError as exc:
                from img_agent.errors import ConfigError

                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"Invalid configuration ({problems}). Fix the flag or IMG_AGENT_* variable.") from None
        return self._settings

    def engine(self, **overrides: Any):
        """The engine for the configured data directory (opened once, closed on exit)."""
        from img_agent.index.engine import Engine

        if self._engine is None:
            self._engine = Engine.open(self.settings(**overrides))
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def emit(self, result: BaseModel | list | dict, human: Callable[[], None]) -> None:
        """Print ``result`` as JSON with --json, else call the human renderer."""
        if self.json:
            print(json.dumps(_jsonable(result), indent=2, ensure_ascii=False))
        else:
            human()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def progress_bar(desc: str):
    """A ``ProgressCallback`` drawing a tqdm bar on stderr (only when stderr is a terminal)."""
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


# -- human renderers ---------------------------------------------------------------------------
def print_hits(hits: Sequence) -> None:
    if not hits:
        print("No results (the index is empty or nothing matched the filter).")
        return
    print(f"{'rank':>4}  {'score':>7}  {'id':>7}  path")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:>7.4f}  {h.id:>7}  {h.path}")


def _print_status(st) -> None:
    rows = [
        ("images (live)", f"{st.live:,}"), ("in main index", f"{st.main:,}"), ("in buffer", f"{st.buffer:,}"),
        ("removed, awaiting rebuild", f"{st.deleted:,}"), ("index", st.index),
        ("index string", st.index_string), ("nlist / nprobe", f"{st.nlist or '-'} / {st.nprobe or '-'}"),
        ("model", f"{st.model} ({st.pretrained}), {st.dim}-d"), ("generation", str(st.generation)),
        ("data dir", st.data_dir), ("size on disk", _human_bytes(st.bytes_on_disk)),
        ("last merge", _when(st.last_merge)), ("last rebuild", _when(st.last_rebuild)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for hint in st.hints:
        print(f"hint: {hint}")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# -- commands ----------------------------------------------------------------------------------
def cmd_index(ctx: CLIContext) -> int:
    args = ctx.args
    eng = ctx.engine()
    bar = progress_bar("indexing")
    try:
        report = eng.add_paths(args.paths, recursive=not args.no_recursive, remove_missing=args.prune, progress=bar)
    finally:
        bar.close()
    maintenance = []
    if eng.settings.auto_rebuild and not args.no_maintain:
        bar = progress_bar("optimising index")
        try:
            maintenance = eng.maintain(progress=bar)
        finally:
            bar.close()

    def human() -> None:
        print(f"Added {len(report.added):,}, unchanged {report.unchanged:,}, replaced {len(report.replaced):,}, "
              f"skipped {len(report.skipped):,}" + (f", removed (files gone) {len(report.removed_missing):,}" if args.prune else ""))
        for item in report.skipped:
            print(f"  skipped {item.path}: {item.reason}")
        for m in maintenance:
            print(f"{m.operation}: {m.moved:,} vectors into {m.index} (generation {m.generation}) in {m.seconds:.1f} s")

    ctx.emit({"report": report, "maintenance": maintenance}, human)
    return 0


def cmd_search(ctx: CLIContext) -> int:
    from img_agent.errors import InvalidInputError
    from img_agent.results import SearchFilter

    args = ctx.args
    given = [x for x in (args.text, args.image, args.similar) if x is not None]
    if len(given) != 1:
        raise InvalidInputError("Give exactly one of: TEXT, --image PATH, --similar ID.")
    flt = SearchFilter(path_prefix=args.prefix, path_glob=args.glob)
    if args.expand:
        if args.text is None:
            raise InvalidInputError("--expand works with a text query.")
        from img_agent.cli.agent import run_rag_search

        return run_rag_search(ctx, args.text, args.k, flt)
    eng = ctx.engine()
    if args.text is not None:
        hits = eng.search_text(args.text, args.k, flt)
    elif args.image is not None:
        hits = eng.search_image(Path(args.image), args.k, flt)
    else:
        hits = eng.search_similar(args.similar, args.k, flt)
    ctx.emit(hits, lambda: print_hits(hits))
    return 0


def cmd_remove(ctx: CLIContext) -> int:
    ids, paths = [], []
    for item in ctx.args.items:
        (ids if item.isdigit() else paths).append(int(item) if item.isdigit() else item)
    report = ctx.engine().remove(ids=ids, paths=paths)

    def human() -> None:
        print(f"Removed {len(report.removed):,} image(s): invisible to search now, dropped from disk at the next rebuild.")
        for item in report.not_found:
            print(f"  not found: {item}")

    ctx.emit(report, human)
    return 0


def _maintenance(ctx: CLIContext, op: str) -> int:
    eng = ctx.engine()
    bar = progress_bar(op)
    try:
        report = eng.merge(progress=bar) if op == "merge" else eng.rebuild(progress=bar, index_string=ctx.args.index_string)
    finally:
        bar.close()

    def human() -> None:
        verb = "Merged" if op == "merge" else "Rebuilt"
        extra = f", dropped {report.dropped:,} removed" if op == "rebuild" else ""
        print(f"{verb}: {report.moved:,} vectors{extra}; index {report.index}, generation {report.generation}, "
              f"{report.seconds:.2f} s" + (" (trained)" if report.retrained else ""))

    ctx.emit(report, human)
    return 0


def cmd_status(ctx: CLIContext) -> int:
    st = ctx.engine().status()
    ctx.emit(st, lambda: _print_status(st))
    return 0


# -- parser ------------------------------------------------------------------------------------
def _global_options() -> argparse.ArgumentParser:
    """Options valid before or after the command (SUPPRESS keeps a later default from erasing them)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="store folder (env IMG_AGENT_DATA_DIR)")
    g.add_argument("--model", default=argparse.SUPPRESS, help="open_clip model, or tiny-test (env IMG_AGENT_MODEL)")
    g.add_argument("--pretrained", default=argparse.SUPPRESS,
                   help="pretrained tag or local checkpoint file (env IMG_AGENT_PRETRAINED)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=argparse.SUPPRESS)
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log to stderr (-vv: debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="img-agent", parents=[common],
        description="Agent-facing image search: CLIP embeddings in an incremental Faiss index.",
    )
    parser.add_argument("--version", action="version", version=f"img-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("index", parents=[common], help="index image files and folders (recursive)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    p.add_argument("--prune", action="store_true", help="remove indexed images whose files vanished from these folders")
    p.add_argument("--no-maintain", action="store_true", help="skip the merge/rebuild advised after adding")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", parents=[common], help="search by text, by image file or by an indexed id")
    p.add_argument("text", nargs="?", help="text query")
    p.add_argument("--image", metavar="PATH", help="query image file")
    p.add_argument("--similar", type=int, metavar="ID", help="images like this indexed one")
    p.add_argument("-k", "--top", dest="k", type=int, default=None, help="number of results (default 20)")
    p.add_argument("--prefix", help="only paths starting with this")
    p.add_argument("--glob", help="only paths matching this glob, e.g. '*/2024/*.jpg'")
    p.add_argument("--expand", action="store_true", help="LLM query expansion + fusion + explanation")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("remove", parents=[common], help="remove images by id, file path or folder")
    p.add_argument("items", nargs="+", metavar="ID|PATH")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("merge", parents=[common], help="merge the buffer into the main index (no retraining)")
    p.set_defaults(func=lambda ctx: _maintenance(ctx, "merge"))

    p = sub.add_parser("rebuild", parents=[common], help="retrain the index on live images; drops removed ones")
    p.add_argument("--index-string", default=None, help="faiss factory string for this rebuild (default: configured)")
    p.set_defaults(func=lambda ctx: _maintenance(ctx, "rebuild"))

    p = sub.add_parser("status", parents=[common], help="counts, index type, model, disk use and advice")
    p.set_defaults(func=cmd_status)

    for module in _SURFACES:
        _register(module, sub, common)
    return parser


def _register(module: str, sub, common: argparse.ArgumentParser) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:  # a surface not installed in this build; real bugs still raise
        if not (exc.name and (module == exc.name or module.startswith(exc.name + "."))):
            raise
        log.debug("commands of %s unavailable: %s", module, exc)
        return
    mod.register(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = getattr(args, "verbose", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity, 2), stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx = CLIContext(args)
    try:
        return int(args.func(ctx) or 0)
    except ImgAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything acknowledged so far is saved.", file=sys.stderr)
        return 130
    finally:
        ctx.close()
