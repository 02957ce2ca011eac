"""What the ANN sweep measures: the families, the grids, the engine's own choice, one plan per index.

Families (all with the dataset's metric: inner product on unit vectors = cosine, or L2):

- ``Flat``  — exact brute force, the baseline every speed-up is measured against;
- ``LSH``   — faiss ``IndexLSH`` (random rotation + thresholds, Hamming search) over code bits;
- ``PQ``    — exhaustive product quantization, sub-quantizers ``m`` × bits;
- ``IVF``   — ``IVF{nlist},{Flat|SQ8|PQ{m}}`` over nlist × nprobe; the coarse k-means is trained
  once per nlist and shared by the codecs (same centroids, as ``merge`` would keep them);
- ``HNSW``  — ``HNSW{M}`` over efSearch.

Compressed codecs are also measured with exact re-ranking of C candidates (``rerank=C`` rows).
The engine's automatic choice for the collection size (:func:`planned_rule`, from
:mod:`img_agent.index.faiss_plan`) is always among the plans, so the sweep checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from img_agent.bench.kinds import FAMILIES
from img_agent.index.faiss_plan import nlist_for, plan_for

if TYPE_CHECKING:
    from img_agent.bench.data import Dataset



# --------------------------------------------------------------------------------------------
# the engine's automatic index choice


@dataclass(frozen=True)
class RuleChoice:
    """One index choice for a collection size: what the engine would build and how it searches."""

    index: str  # faiss factory string ("Flat" for exact)
    nlist: int = 0
    nprobe: int = 0
    rerank: int = 0  # candidates re-ranked exactly for k=10 (0 = none)

    @property
    def label(self) -> str:
        if self.index == "Flat":
            return "Flat (exact)"
        s = f"{self.index} nprobe={self.nprobe}"
        return s + (f" rerank={self.rerank}" if self.rerank else "")

    @property
    def codec(self) -> str:
        """The part after the coarse quantizer, e.g. ``SQ8`` of ``IVF1024,SQ8`` ("" for exact search)."""
        return self.index.partition(",")[2]


def planned_rule(n: int, *, dim: int = 512, k: int = 10, rerank_factor: int = 10) -> RuleChoice:
    """The engine's automatic index for ``n`` vectors (``faiss_plan.plan_for(n, dim)``), searched for ``k``.

    Compressed codes are re-ranked exactly from ``max(100, rerank_factor·k)`` candidates, as the
    engine does with its default ``rerank`` setting.
    """
    plan = plan_for(n, dim)
    if not plan.nlist:
        return RuleChoice("Flat")
    rerank = 0 if plan.exact_scores else max(100, rerank_factor * k)
    return RuleChoice(plan.factory, plan.nlist, plan.nprobe or 0, rerank)


# --------------------------------------------------------------------------------------------
# sweep configuration


@dataclass
class SweepConfig:
    """What to measure. ``None`` grids are derived from the dataset size (see :func:`default_grid`)."""

    k: int = 100  # width of the recall evaluation
    k_latency: int = 10  # k for latency and QPS
    latency_queries: int = 200
    latency_budget_s: float = 3.0  # per configuration; slow baselines stop early (>= 10 queries)
    latency_repeats: int = 2  # passes over the latency queries; the one with the lower p50 is kept
    qps_queries: int = 200
    threads: int = 0  # batch threads; 0 = all cores
    families: tuple[str, ...] = FAMILIES
    lsh_bits: tuple[int, ...] | None = None
    pq_m: tuple[int, ...] = (8, 16, 32, 64)
    pq_bits: tuple[int, ...] = (4, 8)
    nlists: tuple[int, ...] | None = None
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    max_probe_fraction: float = 1 / 8  # skip nprobe > nlist/8 (scans >12 % of the data: never useful)
    ivf_codecs: tuple[str, ...] = ("Flat", "SQ8", "PQ32")
    # coarse quantizer: "flat" (exact, scans nlist centroids per query) or "hnsw" (IVF{K}_HNSW32)
    ivf_quantizers: tuple[str, ...] = ("flat",)
    # candidates re-ranked exactly: 100 = the engine at k=10, 1000 = the engine at k=100 (max(100, 10·k))
    reranks: tuple[int, ...] = (0, 100, 1000)
    train_per_list: int = 64  # k-means training points per IVF list (faiss wants >= 39)
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: tuple[int, ...] = (16, 32, 64, 128, 256)
    include_rule: bool = True  # always add the engine's automatic choice

    @classmethod
    def quick(cls) -> SweepConfig:
        """Seconds, not minutes: one or two settings per family (for tests and smoke runs)."""
        return cls(
            latency_queries=20,
            latency_budget_s=0.2,
            qps_queries=20,
            lsh_bits=(256,),
            pq_m=(16,),
            pq_bits=(4,),
            nlists=(64,),
            nprobes=(1, 8),
            ivf_codecs=("Flat", "SQ8", "PQ16"),
            reranks=(0, 100),
            ef_search=(16, 64),
            hnsw_m=16,
        )


def default_grid(cfg: SweepConfig, n: int, dim: int) -> SweepConfig:
    """Fill the size-dependent grids: nlist around the engine's (×½, ×1, ×2), LSH bits in multiples of dim."""
    out = SweepConfig(**{**asdict(cfg)})
    if out.nlists is None:
        k = nlist_for(n)
        out.nlists = tuple(sorted({max(4, k // 2), k, 2 * k}))
    # faiss needs >= nlist training points; keep >= 39 per list for sane k-means
    out.nlists = tuple(nl for nl in out.nlists if 39 * nl <= n) or (max(1, n // 39),)
    if out.lsh_bits is None:
        out.lsh_bits = (dim // 2, dim, 2 * dim, 4 * dim)
    out.pq_m = tuple(m for m in out.pq_m if dim % m == 0)
    return out


# --------------------------------------------------------------------------------------------
# plans


@dataclass
class Plan:
    """One index to build and the settings to evaluate on it."""

    family: str
    index_string: str
    settings: list[dict]
    reranks: tuple[int, ...]
    nlist: int = 0


def _ivf_factory(nlist: int, quantizer: str, codec: str) -> str:
    head = f"IVF{nlist}" + ("_HNSW32" if quantizer == "hnsw" else "")
    # "np": no polysemous training, which index_factory otherwise runs for PQ and which costs ~10x
    # the PQ training time without changing ADC search results
    return f"{head},{codec}" + ("np" if codec.startswith("PQ") and not codec.endswith("np") else "")


def same_index(a: str, b: str) -> bool:
    """Whether two factory strings build the same searchable index (``np`` only skips a training step)."""
    return a.removesuffix("np") == b.removesuffix("np")


def make_plans(cfg: SweepConfig, n: int, dim: int = 512) -> list[Plan]:
    """Every (index, settings) the sweep will measure, in build order."""
    plans: list[Plan] = []
    compressed_reranks = tuple(sorted(set(cfg.reranks)))
    if "Flat" in cfg.families:
        plans.append(Plan("Flat", "Flat", [{}], (0,)))
    if "LSH" in cfg.families:
        for bits in cfg.lsh_bits or ():
            plans.append(Plan("LSH", f"LSH{bits}", [{"bits": bits}], compressed_reranks))
    if "PQ" in cfg.families:
        for m in cfg.pq_m:
            for b in cfg.pq_bits:
                plans.append(Plan("PQ", f"PQ{m}x{b}np", [{"m": m, "bits": b}], compressed_reranks))
    nlists = list(cfg.nlists or ())
    rule = planned_rule(n, dim=dim) if cfg.include_rule else None
    if rule is not None and rule.nlist and rule.nlist not in nlists and 39 * rule.nlist <= n:
        nlists.append(rule.nlist)
    if "IVF" in cfg.families or rule is not None and rule.nlist:
        for nlist in sorted(nlists):
            is_rule = rule is not None and rule.nlist == nlist
            cap = max(1, int(nlist * cfg.max_probe_fraction))
            probes = sorted({p for p in cfg.nprobes if p <= cap} | ({rule.nprobe} if is_rule else set()))
            codecs = list(cfg.ivf_codecs) if "IVF" in cfg.families else []
            if is_rule and not any(same_index(c, rule.codec) for c in codecs):
                codecs.append(rule.codec)
            for quant in cfg.ivf_quantizers if "IVF" in cfg.families else ("flat",):
                for codec in codecs if quant == "flat" else list(cfg.ivf_codecs):
                    rr = (0,) if codec == "Flat" else compressed_reranks
                    factory = _ivf_factory(nlist, quant, codec)
                    if is_rule and quant == "flat" and same_index(factory, rule.index):
                        rr = tuple(sorted(set(rr) | {0, rule.rerank}))
                    settings = [{"nlist": nlist, "nprobe": p, **({"quantizer": quant} if quant != "flat" else {})}
                                for p in probes]
                    plans.append(Plan("IVF", factory, settings, rr, nlist))
    if "HNSW" in cfg.families:
        plans.append(
            Plan("HNSW", f"HNSW{cfg.hnsw_m}", [{"M": cfg.hnsw_m, "efSearch": e} for e in cfg.ef_search], (0,))
        )
    return plans


def plans_for(ds: Dataset, cfg: SweepConfig) -> list[Plan]:
    """The plans for dataset ``ds``, size-dependent grids filled in."""
    return make_plans(default_grid(cfg, ds.n, ds.dim), ds.n, ds.dim)


def label(row: dict) -> str:
    """Human label of a result row, e.g. ``IVF1024,SQ8 nprobe=16 rerank=100``."""
    p = row["params"]
    parts = [row["index"]]
    if "nprobe" in p:
        parts.append(f"nprobe={p['nprobe']}")
    if "efSearch" in p:
        parts.append(f"efSearch={p['efSearch']}")
    if row.get("rerank"):
        parts.append(f"rerank={row['rerank']}")
    return " ".join(parts)


def count_evaluations(plans: list[Plan], n_query_sets: int = 1) -> int:
    """How many result rows the plans produce (for a progress bar)."""
    return sum(len(p.settings) * len(p.reranks) for p in plans) * n_query_sets


def plan_labels(plan: Plan, query_sets: list[str]) -> set[tuple[str, str]]:
    """(queries, label) of every row ``plan`` produces (to skip plans already measured)."""
    return {
        (q, label({"index": plan.index_string, "params": st, "rerank": rr}))
        for st in plan.settings
        for rr in plan.reranks
        for q in query_sets
    }
