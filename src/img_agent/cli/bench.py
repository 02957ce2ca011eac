"""``img-agent bench ...``: the benchmark suite's commands.

Each benchmark writes ``<name>.json`` (everything), ``<name>.md`` (tables) and ``<name>_*.png``
(plots) into ``--out``; ``bench all`` also writes ``README.md`` linking them. Progress goes to
stderr; nothing but the paths of the markdown files goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

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
    from img_agent.bench.kinds import DATA_KINDS, QUERY_KINDS

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


COMMANDS = ('bench',)
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``bench`` with ``ann``, ``engine``, ``ingest``, ``e2e``, ``report``, ``all``.

    ``common`` is the parser of the global options; its ``--model`` is the model of ``bench
    ingest`` / ``bench e2e``.
    """
    from img_agent.bench.kinds import FAMILIES

    def add(sub, name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

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
    a.set_defaults(func=cmd_ann)

    e = add(sub, "engine", help="the real Engine: search latency/recall, add, merge, remove, rebuild, memory",
                       description="Engine benchmark through Engine.add_vectors/search_vectors/merge/remove/rebuild.")
    _add_common(e)
    _add_data(e)
    e.add_argument("--index-string", default="auto",
                   help="engine index string (default auto: the engine's rule for each N)")
    e.set_defaults(func=cmd_engine)

    i = add(sub, "ingest", help="images/s: engine pipeline vs model-only forward vs a naive loop",
                       description="Encode a folder of generated JPEGs with ViT-B-32 (random weights, no download).")
    _add_common(i, sizes=False)
    i.add_argument("--images", type=parse_count, default=None, help="number of images (default 512; quick: 24)")
    i.add_argument("--size", type=_size, default=None, metavar="WxH", help="image size (default 640x480)")
    i.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    i.add_argument("--workers", type=int, default=None, help="decode threads (default: cores)")
    i.set_defaults(func=cmd_ingest)

    x = add(sub, "e2e", help="text query latency (encode + search) and MCP search_by_text at scale",
                       description="End-to-end query latency through the engine and the MCP server.")
    _add_common(x)
    x.add_argument("--store", type=Path, default=None, metavar="DIR",
                   help="a persistent store: reused if DIR holds one (built with the same --model), else built there "
                        "and kept (default: a temporary store, deleted afterwards)")
    x.set_defaults(func=cmd_e2e)

    s = add(sub, "service", help="the resident service: CLI and bridge start-up, bridged vs in-process calls, memory",
            description="Start-up, latency and memory of the service and its clients against a bare Python start, "
                        "an in-process MCP server and a standalone server, measured round-robin in one run.")
    _add_common(s, sizes=False)
    s.add_argument("--images", type=parse_count, default=None, help="images in the store (default 200; quick: 12)")
    s.add_argument("--rounds", type=int, default=None, help="measurement rounds (default 30; quick: 5)")
    s.set_defaults(func=cmd_service)

    d = add(sub, "duplicates", help="duplicate threshold vs edited copies and distinct images; find_duplicates time",
            description="Cosine of re-encoded, resized and cropped copies to their original and between distinct "
                        "images (--model, default tiny-test) against the default duplicate threshold, and the time "
                        "of find_duplicates on synthetic vectors with planted duplicate groups.")
    _add_common(d, sizes=False)
    d.add_argument("--images", type=parse_count, default=None, help="generated images (default 60; quick: 12)")
    d.add_argument("--vectors", type=parse_count, default=None, metavar="N",
                   help="synthetic vectors for the find_duplicates timing (default 20000; quick: 2000)")
    d.set_defaults(func=cmd_duplicates)

    pe = add(sub, "peers", help="img-agent vs faiss, hnswlib, usearch, LanceDB on the same vectors and queries",
             description="Build, tune (recall floors), R@10, round-robin single-query latency, build time, disk, "
                         "memory, then delete 30 % and measure again, for img-agent and the peer libraries "
                         "installed (pip install 'img-agent[peers]').")
    _add_common(pe, sizes=False)
    pe.add_argument("--sizes", "--n", dest="n", type=parse_counts, default=None, metavar="N[,N...]",
                    help="collection sizes: 100k, 1M; comma-separated (default 100k,1M; quick: 2000)")
    pe.add_argument("--queries", type=parse_count, default=None, metavar="NQ",
                    help="measured queries (default 1000; quick: 30); 200 more (quick: 20) tune the knobs")
    pe.add_argument("--query-kind", choices=("image", "text"), default="image",
                    help="synthetic queries: image (held-out images, default) or text (out-of-distribution)")
    pe.add_argument("--systems", type=lambda t: [x.strip() for x in t.split(",") if x.strip()], default=None,
                    metavar="S[,S]", help="only these systems: img-agent, faiss-flat, faiss-ivf, faiss-hnsw, hnswlib, "
                                          "usearch, lancedb (default all)")
    pe.set_defaults(func=cmd_peers)

    sc = add(sub, "scale", help="engine at 1M: bulk build time and peak RSS, search vs raw faiss, merge and delete",
             description="Bulk-add N vectors, rebuild (train + tune), then public search and its index part against "
                         "raw faiss IVF-Flat and exact Flat (round-robin), merge of a 10k buffer, deletes of 1k and 30 %.")
    _add_common(sc)
    sc.set_defaults(func=cmd_scale)

    bk = add(sub, "backends", help="faiss and Milvus Lite side by side: insert, search, filtered search, deletes",
             description="Insert N vectors into the faiss engine and into Milvus Lite (index by size, and IVF_FLAT) "
                         "through the same engine API, then search and filtered search round-robin with recall "
                         "against exact search, then remove 1k ids and count how many come back.")
    _add_common(bk)
    bk.set_defaults(func=cmd_backends)

    rp = sub.add_parser("report", help="re-render markdown and plots from the JSON results in a folder",
                        description="Rebuild <name>.md and the PNG plots from <name>.json (after a code change to "
                                    "the report, or to merge results), without measuring anything.")
    rp.add_argument("folder", type=Path, help="folder holding ann.json / engine.json / ingest.json / e2e.json")
    rp.set_defaults(func=cmd_report)

    al = add(sub, "all", help="every benchmark in turn (the command that produces docs/benchmarks.md)")
    _add_common(al)
    _add_data(al)
    al.set_defaults(func=cmd_all)
    return p


# --------------------------------------------------------------------------------------------
# commands


def cmd_ann(ctx: CLIContext) -> int:
    from img_agent.bench import ann_sweep

    print(ann_sweep.run(ctx.args))
    return 0


def cmd_engine(ctx: CLIContext) -> int:
    from img_agent.bench import engine_bench

    print(engine_bench.run(ctx.args))
    return 0


def cmd_scale(ctx: CLIContext) -> int:
    from img_agent.bench import scale

    print(scale.run(ctx.args))
    return 0


def cmd_backends(ctx: CLIContext) -> int:
    from img_agent.bench import backends

    print(backends.run(ctx.args))
    return 0


def cmd_ingest(ctx: CLIContext) -> int:
    from img_agent.bench import ingest

    print(ingest.run(ctx.args))
    return 0


def cmd_service(ctx: CLIContext) -> int:
    from img_agent.bench import service_bench

    print(service_bench.run(ctx.args))
    return 0


def cmd_duplicates(ctx: CLIContext) -> int:
    from img_agent.bench import duplicates_bench

    print(duplicates_bench.run(ctx.args))
    return 0


def cmd_peers(ctx: CLIContext) -> int:
    from img_agent.bench import peers

    print(peers.run(ctx.args))
    return 0


def cmd_e2e(ctx: CLIContext) -> int:
    from img_agent.bench import e2e

    print(e2e.run(ctx.args))
    return 0


def cmd_all(ctx: CLIContext) -> int:
    """ann, engine, ingest, e2e in turn; exit status 1 when one of them failed (the others still ran)."""
    from img_agent.bench import suite

    readme, ok = suite.run_all(ctx.args, on_written=print)
    print(readme)
    return 0 if ok else 1


def cmd_report(ctx: CLIContext) -> int:
    """Re-render every ``*.json`` result in a folder (markdown and plots)."""
    from img_agent.bench import suite

    folder: Path = ctx.args.folder
    written = suite.rerender(folder)
    for path in written:
        print(path)
    if not written:
        log.error("no benchmark results (ann.json, engine.json, ingest.json, e2e.json) in %s", folder)
        return 2
    return 0
