"""``img-agent bench ...``: the benchmark suite's command line.

The main CLI calls :func:`register` with its subparsers; ``python -m img_agent.bench`` runs the
same commands standalone. Each sub-benchmark writes ``<name>.json`` (everything), ``<name>.md``
(tables) and ``<name>_*.png`` (plots) into ``--out``; ``bench all`` also writes ``README.md``
linking them. Progress goes to stderr; nothing but the final paths goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("bench-results")


# --------------------------------------------------------------------------------------------
# argument helpers


def parse_count(text: str) -> int:
    """``100000``, ``100k``, ``1M``, ``1e6`` -> int."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t.endswith("k"):
        mult, t = 1_000, t[:-1]
    elif t.endswith("m"):
        mult, t = 1_000_000, t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (use e.g. 100000, 100k, 1M)") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a positive whole count: {text!r}")
    return int(value)


def parse_counts(text: str) -> list[int]:
    return [parse_count(part) for part in text.split(",") if part.strip()]


def _choices_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
        return items

    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError("images must be at least 8x8")
    return w, h


def _add_common(p: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    g = p.add_argument_group("common")
    if sizes:
        g.add_argument("--n", type=parse_counts, default=None, metavar="N[,N...]",
                       help="collection size(s): 100000, 100k, 1M; comma-separated for several (default: per benchmark)")
        g.add_argument("--dim", type=int, default=512, help="vector dimension of synthetic data (default 512)")
        g.add_argument("--queries", type=parse_count, default=None, metavar="NQ",
                       help="number of queries (default 1000; quick: 50)")
    g.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder for JSON, markdown and PNG files (default ./{DEFAULT_OUT})")
    g.add_argument("--quick", action="store_true", help="tiny sizes and grids: a smoke run in seconds")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument("--threads", type=int, default=0, help="threads for batch work (default: all cores)")


def _add_data(p: argparse.ArgumentParser) -> None:
    from img_agent.bench.data import DATA_KINDS, QUERY_KINDS

    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, default=None, metavar="FILE",
                   help="vectors from a .npy or .fvecs/.bvecs file instead of synthetic data (e.g. sift_base.fvecs "
                        "or your own CLIP embeddings); the last --queries rows are held out as queries")
    g.add_argument("--query-data", type=Path, default=None, metavar="FILE",
                   help="queries from a separate .npy/.fvecs file (e.g. sift_query.fvecs)")
    g.add_argument("--metric", choices=("ip", "l2"), default="ip",
                   help="ip: rows L2-normalised, cosine similarity as the engine scores (default); l2: raw vectors "
                        "(SIFT)")
    g.add_argument("--kind", type=_choices_list(DATA_KINDS), default=["clip"], metavar="KIND[,KIND]",
                   help=f"synthetic model(s): {', '.join(DATA_KINDS)} (default clip; see docs/benchmarks.md)")
    g.add_argument("--query-kind", type=_choices_list(QUERY_KINDS), default=None, metavar="Q[,Q]",
                   help="synthetic query set(s): image (held-out images), text (out-of-distribution, like CLIP "
                        "text queries); default image,text")


def _entry(fn: Callable[[argparse.Namespace], int]) -> Callable[[object], int]:
    """Accept the parsed namespace itself, or the main CLI's context object carrying it as ``.args``."""

    def run(obj: object) -> int:
        args = obj if isinstance(obj, argparse.Namespace) else getattr(obj, "args")
        return fn(args)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def register(subparsers, common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``bench`` command (with ``ann``, ``engine``, ``ingest``, ``e2e``, ``all``) to a CLI.

    ``common`` is the main CLI's parent parser of global options (its ``--model`` is then the model
    of ``bench ingest`` / ``bench e2e``). Every sub-command sets ``func``; ``args.func(args)`` or
    ``args.func(ctx)`` (any object with the namespace as ``.args``) runs it and returns the exit status.
    """
    from img_agent.bench.ann import FAMILIES

    parents = [common] if common is not None else []

    def add(sub, name: str, **kw) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=parents, **kw)
        if common is None:  # standalone: no global --model to inherit
            sp.add_argument("--model", default=argparse.SUPPRESS,
                            help="open_clip model (ingest: default ViT-B-32, quick: tiny-test; e2e: the text model)")
        return sp

    p = subparsers.add_parser(
        "bench",
        help="benchmarks: ANN sweep, engine at scale, ingestion, end-to-end latency",
        description="Measure recall, latency, throughput and memory; write JSON + markdown + PNG into --out.",
    )
    sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)

    a = add(sub, "ann", help="ANN sweep with raw faiss (Flat, LSH, PQ, IVF-Flat/SQ8/PQ ± re-rank, HNSW)",
                       description="Recall@1/10/100 (tie-aware set recall) and faiss 1-recall@R, latency, QPS, "
                                   "memory and build time for every index family.")
    _add_common(a)
    _add_data(a)
    a.add_argument("--families", type=_choices_list(FAMILIES), default=list(FAMILIES), metavar="F[,F]",
                   help=f"index families to measure (default all: {','.join(FAMILIES)})")
    g = a.add_argument_group("grid (defaults: docs/benchmarks.md)")
    g.add_argument("--nlists", type=parse_counts, default=None, metavar="K[,K]",
                   help="IVF list counts (default: the power of two nearest 4·√N, halved and doubled)")
    g.add_argument("--ivf-codecs", default=None, metavar="C[,C]",
                   help="IVF codecs, faiss factory suffixes (default Flat,SQ8,PQ32)")
    g.add_argument("--ivf-quantizer", type=_choices_list(("flat", "hnsw")), default=None, metavar="Q[,Q]",
                   help="IVF coarse quantizer: flat (exact) and/or hnsw (IVF{K}_HNSW32; default flat)")
    g.add_argument("--pq-m", type=parse_counts, default=None, metavar="M[,M]",
                   help="exhaustive PQ sub-quantizers (default 8,16,32,64)")
    g.add_argument("--pq-bits", type=parse_counts, default=None, metavar="B[,B]",
                   help="exhaustive PQ bits per sub-quantizer (default 4,8)")
    g.add_argument("--lsh-bits", type=parse_counts, default=None, metavar="B[,B]",
                   help="LSH code bits (default dim/2, dim, 2·dim, 4·dim)")
    a.add_argument("--resume", action="store_true",
                   help="keep the rows of an interrupted run on the same data (ann.partial.json in --out) and "
                        "measure only what is missing")
    a.set_defaults(func=_entry(run_ann))

    e = add(sub, "engine", help="the real Engine: search latency/recall, add, merge, remove, rebuild, memory",
                       description="Engine benchmark through Engine.add_vectors/search_vectors/merge/remove/rebuild.")
    _add_common(e)
    _add_data(e)
    e.add_argument("--index-string", default="auto",
                   help="engine index string (default auto: the engine's rule for each N)")
    e.set_defaults(func=_entry(run_engine))

    i = add(sub, "ingest", help="images/s: engine pipeline vs model-only forward vs a naive loop",
                       description="Encode a folder of generated JPEGs with ViT-B-32 (random weights, no download).")
    _add_common(i, sizes=False)
    i.add_argument("--images", type=parse_count, default=None, help="number of images (default 512; quick: 24)")
    i.add_argument("--size", type=_size, default=None, metavar="WxH", help="image size (default 640x480)")
    i.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    i.add_argument("--workers", type=int, default=None, help="decode threads (default: cores)")
    i.set_defaults(func=_entry(run_ingest))

    x = add(sub, "e2e", help="text query latency (encode + search) and MCP search_by_text at scale",
                       description="End-to-end query latency through the engine and the MCP server.")
    _add_common(x)
    x.add_argument("--store", type=Path, default=None, metavar="DIR",
                   help="a persistent store: reused if DIR holds one (built with the same --model), else built there "
                        "and kept (default: a temporary store, deleted afterwards)")
    x.set_defaults(func=_entry(run_e2e))

    rp = sub.add_parser("report", help="re-render markdown and plots from the JSON results in a folder",
                        description="Rebuild <name>.md and the PNG plots from <name>.json (after a code change to "
                                    "the report, or to merge results), without measuring anything.")
    rp.add_argument("folder", type=Path, help="folder holding ann.json / engine.json / ingest.json / e2e.json")
    rp.set_defaults(func=_entry(run_report))

    al = add(sub, "all", help="every benchmark in turn (the command that produces docs/benchmarks.md)")
    _add_common(al)
    _add_data(al)
    al.set_defaults(func=_entry(run_all))
    return p


# --------------------------------------------------------------------------------------------
# running


class _Progress:
    """A tqdm bar on stderr (or nothing); ``__call__(advance, message)``."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

    def __call__(self, advance: int, message: str) -> None:
        if self.bar is not None:
            if advance:
                self.bar.update(advance)
            self.bar.set_postfix_str(message[:60], refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _command_line(args: argparse.Namespace) -> str:
    argv = getattr(args, "argv", None) or sys.argv
    return " ".join(shlex.quote(a) for a in argv)


def run_ann(args: argparse.Namespace) -> int:
    from img_agent.bench import ann as ann_mod
    from img_agent.bench import report
    from img_agent.bench.data import make_dataset

    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sizes = args.n or ([3000] if args.quick else [100_000])
    nq = args.queries or (50 if args.quick else 1000)
    query_kinds = tuple(args.query_kind or ("image", "text"))
    cfg = ann_mod.SweepConfig.quick() if args.quick else ann_mod.SweepConfig()
    cfg.families = tuple(args.families)
    cfg.threads = args.threads
    for attr in ("nlists", "pq_m", "pq_bits", "lsh_bits"):
        if getattr(args, attr, None):
            setattr(cfg, attr, tuple(getattr(args, attr)))
    if getattr(args, "ivf_codecs", None):
        cfg.ivf_codecs = tuple(c.strip() for c in args.ivf_codecs.split(",") if c.strip())
    if getattr(args, "ivf_quantizer", None):
        cfg.ivf_quantizers = tuple(args.ivf_quantizer)
    result = report.new_result("ann", command=_command_line(args), quick=args.quick, config=_jsonable(cfg))
    result["runs"] = []
    kinds = ["file"] if args.data else list(args.kind)
    for kind in kinds:
        for n in sizes:
            log.info("ann: data %s n=%d", kind, n)
            ds = make_dataset(
                n=n, nq=nq, dim=args.dim, kind=kind if kind != "file" else "clip", query_kinds=query_kinds,
                seed=args.seed, data=args.data, query_data=args.query_data, metric=args.metric,
            )
            plans = ann_mod.plans_for(ds, cfg)
            partial = out / "ann.partial.json"
            key = {"name": ds.name, "n": ds.n, "dim": ds.dim, "seed": args.seed, "nq": nq,
                   "queries": [q.name for q in ds.queries], "data": str(args.data) if args.data else None}
            done_rows = _load_partial(partial, key) if getattr(args, "resume", False) else []
            bar = _Progress(ann_mod.count_evaluations(plans, len(ds.queries)), f"ann {ds.name} N={ds.n:,}",
                            not args.no_progress)

            def save(rows: list[dict], key=key, partial=partial) -> None:
                report.write_json(partial, {"key": key, "rows": rows})

            try:
                rows = ann_mod.run_sweep(ds, cfg, progress=bar, done_rows=done_rows, on_plan=save)
            finally:
                bar.close()
            partial.unlink(missing_ok=True)
            run = {
                "dataset": {"name": ds.name, **ds.info},
                "query_sets": [{"name": q.name, **q.info} for q in ds.queries],
                "rows": rows,
                "summary": ann_mod.sweep_summary(rows, ds),
            }
            for qs in run["query_sets"]:
                stem = f"ann_{ds.name}_{ds.n}_{qs['name']}"
                qs["plots"] = report.ann_plots(run, qs["name"], out, stem)
            result["runs"].append(run)
            del ds
            report.finish_result(result, t0)
            _write(out, "ann", result, report.ann_markdown(result))  # after each size: partial results survive
    print(out / "ann.md")
    return 0


def _load_partial(path: Path, key: dict) -> list[dict]:
    """Rows of an interrupted sweep on the same data, or [] (with a note) if there are none."""
    import json

    if not path.exists():
        log.info("nothing to resume in %s", path)
        return []
    saved = json.loads(path.read_text())
    if saved.get("key") != key:
        log.warning("%s holds rows of another run (%s); starting afresh", path, saved.get("key"))
        return []
    log.info("resuming: %d rows kept from %s", len(saved.get("rows", [])), path)
    return saved.get("rows", [])


def _write(out: Path, name: str, result: dict, markdown: str) -> None:
    from img_agent.bench import report

    report.write_json(out / f"{name}.json", result)
    (out / f"{name}.md").write_text(markdown)


def _jsonable(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def run_engine(args: argparse.Namespace) -> int:
    from img_agent.bench import engine_bench

    return engine_bench.main(args)


def run_ingest(args: argparse.Namespace) -> int:
    from img_agent.bench import ingest

    return ingest.main(args)


def run_e2e(args: argparse.Namespace) -> int:
    from img_agent.bench import e2e

    return e2e.main(args)


def run_all(args: argparse.Namespace) -> int:
    """ann, engine, ingest, e2e in turn; one failing benchmark does not stop the others."""
    from img_agent.bench import report

    status = 0
    done: list[tuple[str, str]] = []
    for name, fn in (("ann", run_ann), ("engine", run_engine), ("ingest", run_ingest), ("e2e", run_e2e)):
        sub_args = argparse.Namespace(**vars(args))
        for attr, default in (("families", None), ("images", None), ("size", None), ("model", None),
                              ("batch_size", 32), ("workers", None), ("query_kind", None), ("data", None),
                              ("query_data", None), ("metric", "ip"), ("kind", ["clip"]), ("store", None),
                              ("index_string", "auto")):
            if not hasattr(sub_args, attr):
                setattr(sub_args, attr, default)
        if sub_args.families is None:
            from img_agent.bench.ann import FAMILIES

            sub_args.families = list(FAMILIES)
        try:
            rc = fn(sub_args)
            done.append((name, "ok" if rc == 0 else f"exit {rc}"))
            status = status or rc
        except Exception as exc:  # noqa: BLE001 - report and go on with the next benchmark
            log.exception("bench %s failed", name)
            done.append((name, f"failed: {type(exc).__name__}: {exc}"))
            status = 1
    lines = ["# Benchmark results", "", report.meta_markdown(report.new_result("all", command=_command_line(args),
                                                                              quick=args.quick)["meta"]), ""]
    for name, state in done:
        lines.append(f"- [{name}]({name}.md): {state}")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(args.out / "README.md")
    return status


def run_report(args: argparse.Namespace) -> int:
    """Re-render every ``*.json`` result in a folder (markdown and plots)."""
    import json

    from img_agent.bench import ann as ann_mod
    from img_agent.bench import report

    folder: Path = args.folder
    found = 0
    for name in ("ann", "engine", "ingest", "e2e"):
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        found += 1
        result = json.loads(path.read_text())
        if name == "ann":
            for run in result.get("runs", []):
                run["summary"] = ann_mod.summary_from_rows(run["rows"], run["dataset"]["n"],
                                                           [q["name"] for q in run["query_sets"]])
                for qs in run["query_sets"]:
                    stem = f"ann_{run['dataset']['name']}_{run['dataset']['n']}_{qs['name']}"
                    qs["plots"] = report.ann_plots(run, qs["name"], folder, stem)
            markdown = report.ann_markdown(result)
        elif name == "engine":
            result["plots"] = report.engine_plots(result, folder)
            markdown = report.engine_markdown(result)
        elif name == "ingest":
            result["plots"] = report.ingest_plots(result, folder)
            markdown = report.ingest_markdown(result)
        else:
            markdown = report.e2e_markdown(result)
        report.write_json(path, result)
        (folder / f"{name}.md").write_text(markdown)
        print(folder / f"{name}.md")
    if not found:
        log.error("no benchmark results (ann.json, engine.json, ingest.json, e2e.json) in %s", folder)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m img_agent.bench ann --quick``."""
    parser = argparse.ArgumentParser(prog="python -m img_agent.bench")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["bench", *argv])
    args.argv = ["img-agent", "bench", *argv]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("faiss.loader", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return args.func(args)
