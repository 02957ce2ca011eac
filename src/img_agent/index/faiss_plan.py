"""Faiss index plans: which index for which collection size, how to build, search and store it.

All indexes use inner product on unit vectors (= cosine). Ids inside every index are the catalog's
image ids: IVF indexes take them natively, others are wrapped in ``IndexIDMap2``. Deleted and
filtered-out ids are excluded inside the search with an ``IDSelectorBitmap`` over the dense id space.

The automatic rule (:data:`AUTO_RULES`, :func:`nlist_for`, :func:`default_nprobe`,
:func:`rerank_candidates`, :func:`plan_for` with ``"auto"``) is plain arithmetic: it imports no
faiss and builds no index, so benchmarks can state what the engine would choose for any size.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.errors import InvalidInputError
from img_agent.index.durable import write_atomic_with
from img_agent.results import ProgressCallback

log = logging.getLogger(__name__)

# The automatic choice by collection size, as data: (largest N, factory template). ``{nlist}`` is
# filled with nlist_for(N), ``{pq_m}`` with dim // 16. Derived from the sweep in docs/benchmarks.md.
AUTO_RULES: tuple[tuple[float, str], ...] = (
    (50_000, "Flat"),
    (4_000_000, "IVF{nlist},SQ8"),
    (math.inf, "IVF{nlist},PQ{pq_m}x8"),
)
MIN_RERANK_CANDIDATES = 100
"""Compressed-code searches fetch at least this many candidates for the exact re-rank."""
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per list / codebook entry
MAX_TRAIN_POINTS_PER_CENTROID = 40  # k-means cost grows with the sample; the tuned nprobe absorbs the difference
ADD_CHUNK = 65_536
_SEED = 1234


def nlist_for(n: int) -> int:
    """IVF list count for n vectors: the power of two nearest 4*sqrt(n), within [64, 65536]."""
    target = 4 * math.sqrt(max(n, 1))
    return int(min(65_536, max(64, 2 ** round(math.log2(target)))))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: nlist/64 (1.6 % of the data), at least 16, at most nlist."""
    return int(min(nlist, max(16, nlist // 64)))


def rerank_candidates(k: int, factor: int) -> int:
    """Candidates a compressed-code index returns for an exact re-rank of the best ``k``."""
    return max(k * factor, MIN_RERANK_CANDIDATES)


def auto_factory(n: int, dim: int) -> str:
    """The factory string :data:`AUTO_RULES` choose for ``n`` vectors of dimension ``dim``."""
    template = next(t for limit, t in AUTO_RULES if n <= limit)
    return template.format(nlist=nlist_for(n), pq_m=max(1, dim // 16))


@dataclass(frozen=True)
class IndexPlan:
    """What to build: a faiss factory string and how to search it."""

    factory: str
    nlist: int | None = None
    nprobe: int | None = None
    min_train: int = 0
    note: str | None = None

    @property
    def trained(self) -> bool:
        return self.min_train > 0

    @property
    def exact_scores(self) -> bool:
        """Whether distances are exact inner products: full vectors, untransformed.

        Only Flat codes (or HNSW's own full vectors) with no PCA/OPQ/other transform in front qualify;
        every other index gives candidates that are re-ranked exactly from the vector store.
        """
        return _EXACT.match(self.factory) is not None

    @property
    def is_hnsw(self) -> bool:
        """Whether the search structure is an HNSW graph (possibly behind a transform)."""
        parts = self.factory.split(",")
        if len(parts) > 1 and _PREFIX.match(parts[0]):
            parts = parts[1:]
        return _HNSW.match(parts[0]) is not None


NLIST_FLOOR = 65_536
"""IVF lists any collection may ask for (the automatic rule's largest); larger counts need as many vectors."""
NLIST_CAP = 1 << 20
"""IVF lists no collection may ask for: faiss allocates per list before a single vector is added."""
HNSW_M_RANGE = (4, 128)
PQ_BITS_RANGE = (4, 12)
_SQ_CODES = ("SQ4", "SQ6", "SQ8", "SQfp16")
_PREFIX = re.compile(r"^(?:OPQ(?P<opq_m>\d+)(?:_(?P<opq_d>\d+))?|(?P<pca>PCAR?)(?P<pca_d>\d+))$")
_PQ = re.compile(r"^PQ(?P<m>\d+)(?:x(?P<bits>\d+))?(?:np)?$")
_HNSW = re.compile(r"^HNSW(?P<m>\d+)$")
_IVF = re.compile(r"^IVF(?P<nlist>\d+)(?:_HNSW(?P<m>\d+))?$")
_EXACT = re.compile(r"^(?:Flat|HNSW\d+(?:,Flat)?|IVF\d+(?:_HNSW\d+)?,Flat)$")


def max_nlist(n: int) -> int:
    """The most IVF lists an index string may ask for with ``n`` live vectors."""
    return min(NLIST_CAP, max(n, NLIST_FLOOR))


def accepted_factories(dim: int, n: int) -> str:
    """What :func:`check_factory` accepts, as a sentence for messages."""
    lo, hi = HNSW_M_RANGE
    blo, bhi = PQ_BITS_RANGE
    return (
        f"'auto'; 'Flat'; an SQ code alone ('SQ8'); 'HNSW<M>' (M {lo}-{hi}, optionally ',Flat' or ',SQ8'); 'IVF<nlist>,<codes>' or "
        f"'IVF<nlist>_HNSW<M>,<codes>' with nlist 1-{max_nlist(n):,} for {n:,} images and codes Flat, "
        f"{', '.join(_SQ_CODES)} or PQ<m>[x<bits>] (m dividing the dimension {dim}, bits {blo}-{bhi}); "
        "optionally 'OPQ<m>,' or 'PCA<d>,' first. Examples: 'IVF1024,Flat', 'IVF4096,SQ8', 'IVF4096,PQ32x8', 'HNSW32'"
    )


def check_factory(factory: str, dim: int, n: int) -> None:
    """Validate a user's index string by reading it, before faiss allocates anything.

    Only index families the engine can build, fill with its ids and search with a selector are
    accepted: Flat, SQ codes, HNSW and IVF, optionally behind one PCA/OPQ transform. PQ codes need an
    IVF in front (a bare PQ index cannot search with a selector); id wrappers (IDMap, IDMap2) are the
    engine's own business. Bounds: nlist at most :func:`max_nlist` (n), HNSW M and PQ bits in their
    ranges, PQ m dividing the (possibly reduced) dimension.

    Raises:
        InvalidInputError: naming what is wrong and listing what is accepted.
    """

    def refuse(reason: str) -> InvalidInputError:
        return InvalidInputError(f"Index string {factory!r} is not accepted: {reason}. Accepted: {accepted_factories(dim, n)}.")

    parts = factory.split(",")
    if any(not part for part in parts) or len(parts) > 3:
        raise refuse("it has empty or too many comma-separated parts")
    width = dim
    prefix = _PREFIX.match(parts[0]) if len(parts) > 1 else None
    opq_m: int | None = None
    if prefix is not None:
        parts = parts[1:]
        reduced = prefix.group("opq_d") or prefix.group("pca_d")
        if reduced is not None:
            width = int(reduced)
            if not 1 <= width <= dim:
                raise refuse(f"the reduced dimension {width} must be from 1 to {dim}")
        if prefix.group("opq_m") is not None:
            opq_m = int(prefix.group("opq_m"))
    head, codes = parts[0], parts[1] if len(parts) > 1 else None
    if len(parts) > 2:
        raise refuse(f"{parts[2]!r} follows the codes")

    def check_hnsw(m_text: str) -> None:
        m = int(m_text)
        if not HNSW_M_RANGE[0] <= m <= HNSW_M_RANGE[1]:
            raise refuse(f"HNSW M={m} is outside {HNSW_M_RANGE[0]}-{HNSW_M_RANGE[1]}")

    def check_codes(text: str) -> None:
        if text == "Flat" or text in _SQ_CODES:
            return
        pq = _PQ.match(text)
        if pq is None:
            raise refuse(f"unknown component {text!r}")
        m, bits = int(pq.group("m")), int(pq.group("bits") or 8)
        if m < 1 or width % m:
            raise refuse(f"PQ m={m} must divide the dimension {width}")
        if not PQ_BITS_RANGE[0] <= bits <= PQ_BITS_RANGE[1]:
            raise refuse(f"PQ bits={bits} is outside {PQ_BITS_RANGE[0]}-{PQ_BITS_RANGE[1]}")

    if opq_m is not None and (opq_m < 1 or width % opq_m):
        raise refuse(f"OPQ m={opq_m} must divide the dimension {width}")
    if (hnsw := _HNSW.match(head)) is not None:
        check_hnsw(hnsw.group("m"))
        if codes is not None and codes not in ("Flat", "SQ8"):
            raise refuse(f"HNSW takes ',Flat' or ',SQ8', not {codes!r}")
        return
    if (ivf := _IVF.match(head)) is not None:
        nlist = int(ivf.group("nlist"))
        if not 1 <= nlist <= max_nlist(n):
            raise refuse(f"nlist={nlist:,} must be from 1 to {max_nlist(n):,} for a collection of {n:,} images")
        if ivf.group("m") is not None:
            check_hnsw(ivf.group("m"))
        if codes is None:
            raise refuse("IVF needs codes after it, e.g. 'IVF1024,Flat'")
        check_codes(codes)
        return
    if codes is not None:
        raise refuse(f"unknown component {head!r}")
    if _PQ.match(head):
        raise refuse(f"PQ codes need an IVF in front, e.g. 'IVF1024,{head}'")
    check_codes(head)


def _check(factory: str, dim: int) -> None:
    """Raise InvalidInputError if faiss rejects ``factory`` for ``dim``-d vectors (builds an empty index)."""
    import faiss

    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "rejected"
        raise InvalidInputError(
            f"Index string {factory!r} is not a valid faiss factory string for {dim}-d vectors ({first}). "
            "Use 'auto' or a string such as 'Flat', 'IVF1024,Flat', 'IVF4096,SQ8', 'IVF4096,PQ32x8', 'HNSW32'."
        ) from exc


def _requirements(factory: str) -> tuple[int | None, int]:
    """(nlist, minimum training points) read from a factory string."""
    m = re.search(r"IVF(\d+)", factory)
    nlist = int(m.group(1)) if m else None
    if nlist is not None and nlist < 1:
        raise InvalidInputError(f"Index string {factory!r} asks for {nlist} IVF lists; use at least 1 (e.g. 'IVF1024,SQ8').")
    need = MIN_POINTS_PER_CENTROID * nlist if nlist else 0
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", factory)
    if pq:
        bits = int(pq.group(2) or 8)
        need = max(need, MIN_POINTS_PER_CENTROID * 2**bits)
    if re.search(r"SQ|LSH|OPQ|PCA", factory) and not need:
        need = 1
    return nlist, need


def plan_for(n: int, dim: int, index_string: str = "auto", nprobe: int | None = None) -> IndexPlan:
    """The index to build for n live vectors. Falls back to exact search when n cannot train it.

    With ``"auto"`` this is arithmetic only (no faiss); another index string is read and bounded by
    :func:`check_factory` first, then checked by faiss.

    Raises:
        InvalidInputError: the index string is not accepted.
    """
    index_string = index_string.strip()
    if index_string == "auto":
        plan = _plan(auto_factory(n, dim), nprobe)
    else:
        check_factory(index_string, dim, n)
        plan = plan_of(index_string, dim, nprobe)
    factory = plan.factory
    if n < plan.min_train:
        return IndexPlan(
            "Flat",
            note=f"{factory!r} needs at least {plan.min_train:,} vectors to train and stays the chosen index; "
            f"exact search is used until the collection has {plan.min_train:,} images, then a rebuild trains it.",
        )
    return plan


def plan_of(factory: str, dim: int, nprobe: int | None = None) -> IndexPlan:
    """The plan describing an index built from ``factory`` (also for one loaded from disk).

    Raises:
        InvalidInputError: faiss rejects the factory string.
    """
    _check(factory, dim)
    return _plan(factory, nprobe)


def plan_of_loaded(factory: str, index: Any, nprobe: int | None = None) -> IndexPlan:
    """The plan of an index read from disk, from the string it was built with (the catalog's).

    Nothing is built: the string is read and compared with the index itself, so a damaged or edited
    string can never make faiss allocate what it names.

    Raises:
        InvalidInputError: the string cannot be read, or does not describe ``index``.
    """
    import faiss

    plan = _plan(factory, nprobe)
    try:
        nlist = int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        nlist = None
    if nlist != plan.nlist:
        raise InvalidInputError(f"the catalog's index string {factory!r} does not describe the index file "
                                f"({'IVF with ' + str(nlist) + ' lists' if nlist else 'no IVF'})")
    return plan


def _plan(factory: str, nprobe: int | None) -> IndexPlan:
    nlist, need = _requirements(factory)
    probe = (min(nlist, nprobe) if nprobe else default_nprobe(nlist)) if nlist else None
    return IndexPlan(factory, nlist=nlist, nprobe=probe, min_train=need)


def build(
    plan: IndexPlan,
    dim: int,
    ids: np.ndarray,
    rows: Callable[[np.ndarray], np.ndarray],
    progress: ProgressCallback | None = None,
):
    """Train (if needed) and fill a new index with the vectors of ``ids``, read through ``rows(ids)``."""
    import faiss

    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if not _takes_ids(index):
        index = faiss.IndexIDMap2(index)
    n = len(ids)
    if plan.trained:
        per = MAX_TRAIN_POINTS_PER_CENTROID * (plan.nlist or 256)
        size = min(n, max(plan.min_train, per))
        rng = np.random.default_rng(_SEED)
        sample = np.sort(rng.choice(ids, size=size, replace=False)) if size < n else ids
        if progress:
            progress(0, n, f"training {plan.factory} on {size:,} vectors")
        index.train(np.ascontiguousarray(rows(sample), dtype=np.float32))
    for start in range(0, n, ADD_CHUNK):
        chunk = ids[start : start + ADD_CHUNK]
        index.add_with_ids(np.ascontiguousarray(rows(chunk), dtype=np.float32), chunk.astype(np.int64))
        if progress:
            progress(min(n, start + ADD_CHUNK), n, f"adding to {plan.factory}")
    return index


def _takes_ids(index) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def search_params(plan: IndexPlan, selector, nprobe: int | None = None):
    """Per-call search parameters (thread-safe, unlike setting index.nprobe)."""
    import faiss

    if plan.nlist:
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(nprobe or plan.nprobe or 1))
    if plan.is_hnsw:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=128)
    return faiss.SearchParameters(sel=selector)


def bitmap_selector(bitmap: np.ndarray):
    """Selector over a packed little-endian bitmap (bit i set = id i allowed). Keep ``bitmap`` alive."""
    import faiss

    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))


def write_index(index, path: Path) -> None:
    """Write ``index`` to ``path`` atomically (see :mod:`img_agent.index.durable`)."""
    import faiss

    write_atomic_with(path, lambda tmp: faiss.write_index(index, str(tmp)))


def index_bytes(index) -> int:
    """Serialized size of a faiss index, counted without materialising it (about its resident size)."""
    import faiss

    total = 0

    def count(buf: bytes) -> int:
        nonlocal total
        total += len(buf)
        return len(buf)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def read_index(path: Path):
    import faiss

    return faiss.read_index(str(path))

