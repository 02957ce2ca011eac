"""Benchmark data: seeded synthetic CLIP-like embeddings, ``.fvecs``/``.npy`` loading, exact ground truth.

Synthetic models (``kind``), all 512-d by default and unit-normalised like CLIP features:

``clip`` (default)
    A model of what CLIP ViT-B/32 image embeddings look like, built from published properties:

    * **a cone** — all image embeddings share a common direction (the "modality gap" /
      cone effect, Liang et al. 2022), so unrelated images still have cosine ≈ 0.3–0.5;
    * **anisotropy** — variance decays over directions (power-law spectrum in a random basis),
      so a few hundred directions carry most of the spread;
    * **a concept hierarchy with skewed sizes** — 256 top-level concepts × 64 sub-concepts with
      Zipf-distributed popularity (real photo collections are dominated by a few subjects),
      which produces uneven IVF lists as real data does;
    * **near-duplicates** — 5 % of the images are small perturbations of an earlier one (bursts,
      edits, re-saves), which creates near-ties in the ground truth.

    The structure (basis, spectrum, concept centres) is fixed by the seed and independent of
    ``n``, and rows are generated in fixed-size chunks with their own seeds, so the first 100k
    rows of a 1M set *are* the 100k set (sizes are comparable).

``clustered``
    :func:`img_agent.testing.clip_like_vectors`: isotropic Gaussian clusters around ~√n random
    centres (easy for IVF: clusters are well separated).

``smooth``
    Cluster-free anisotropic Gaussian inside the cone: the pessimistic end for partition-based
    indexes (no structure for k-means to find).

Query sets: ``image`` queries are held-out draws from the same model (image-to-image search);
``text`` queries model text embeddings — a concept direction seen through a *different* cone
(CLIP text and image embeddings occupy separate cones: a matching caption has cosine ≈ 0.3 with
its image), so queries are out of the database's distribution, as text queries are in the
product. Every dataset's difficulty is reported (cosine statistics, local intrinsic
dimensionality), so a user can compare it with their own embeddings (``--data``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

DataKind = Literal["clip", "clustered", "smooth"]
QueryKind = Literal["image", "text"]
DATA_KINDS: tuple[str, ...] = ("clip", "clustered", "smooth")
QUERY_KINDS: tuple[str, ...] = ("image", "text")
Metric = Literal["ip", "l2"]

_CHUNK = 16384  # rows per independently seeded chunk (keeps prefixes stable across n)
_QUERY_STREAM = 1_000_003  # seed offset of the query stream, disjoint from the database stream


# --------------------------------------------------------------------------------------------
# the CLIP-like generator


@dataclass(frozen=True)
class ClipModelParams:
    """Knobs of the ``clip`` model; defaults give statistics in CLIP ViT-B/32's range (see module doc)."""

    n_top: int = 256  # top-level concepts
    n_sub: int = 64  # sub-concepts per top-level concept
    zipf_top: float = 1.0  # popularity exponent of top-level concepts
    zipf_sub: float = 0.7  # popularity exponent of sub-concepts inside a concept
    spectrum_decay: float = 0.5  # variance of direction i ∝ (i + 1) ** -decay
    cone: float = 0.9  # weight of the shared image direction (cone effect)
    w_top: float = 0.65  # scale of the top-level concept offset
    w_sub: float = 0.55  # scale of the sub-concept offset
    w_item: float = 0.55  # scale of the per-image offset
    dup_fraction: float = 0.05  # share of images that are near-duplicates of an earlier one
    dup_noise: float = 0.08  # relative size of a near-duplicate's perturbation
    text_cone: float = 1.1  # weight of the text cone direction for text queries
    text_noise: float = 0.9  # per-query noise for text queries (captions are vague)


class _ClipModel:
    """Fixed structure of the ``clip`` model for one (dim, seed)."""

    def __init__(self, dim: int, seed: int, p: ClipModelParams):
        self.dim, self.p = dim, p
        rng = np.random.default_rng([seed, 7])
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        scale = (np.arange(dim) + 1.0) ** (-p.spectrum_decay / 2.0)
        scale *= math.sqrt(dim) / np.linalg.norm(scale)  # E|scale ⊙ z|^2 = dim for z ~ N(0, I)
        # basis with the spectrum folded in: v = z @ self.basis gives an anisotropic Gaussian
        self.basis = (scale[:, None] * q.T).astype(np.float32)
        self.cone_dir = _unit(rng.standard_normal(dim)).astype(np.float32)
        self.text_dir = _unit(rng.standard_normal(dim)).astype(np.float32)
        self.top = rng.standard_normal((p.n_top, dim)).astype(np.float32)
        self.sub = rng.standard_normal((p.n_top, p.n_sub, dim)).astype(np.float32)
        self.p_top = _zipf(p.n_top, p.zipf_top)
        self.p_sub = _zipf(p.n_sub, p.zipf_sub)

    def _latent(self, rng: np.random.Generator, m: int, item_w: float) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        t = rng.choice(p.n_top, size=m, p=self.p_top)
        s = rng.choice(p.n_sub, size=m, p=self.p_sub)
        z = p.w_top * self.top[t] + p.w_sub * self.sub[t, s]
        z += item_w * rng.standard_normal((m, self.dim), dtype=np.float32)
        return z, t

    def images(self, rng: np.random.Generator, m: int) -> np.ndarray:
        p = self.p
        z, _ = self._latent(rng, m, p.w_item)
        v = (z @ self.basis) / math.sqrt(self.dim)
        x = v + p.cone * self.cone_dir
        x = _normalize(x)
        ndup = int(round(p.dup_fraction * m))
        if ndup and m > 1:
            dst = rng.choice(np.arange(1, m), size=min(ndup, m - 1), replace=False)
            src = (rng.random(dst.size) * dst).astype(np.int64)  # an earlier row of this chunk
            noise = rng.standard_normal((dst.size, self.dim), dtype=np.float32) * (p.dup_noise / math.sqrt(self.dim))
            x[dst] = _normalize(x[src] + noise)
        return x

    def texts(self, rng: np.random.Generator, m: int) -> np.ndarray:
        p = self.p
        z, _ = self._latent(rng, m, p.text_noise)
        v = (z @ self.basis) / math.sqrt(self.dim)
        return _normalize(v + p.text_cone * self.text_dir)


def _zipf(n: int, a: float) -> np.ndarray:
    w = (np.arange(n) + 1.0) ** -a
    return w / w.sum()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    x /= norms
    return x


def _smooth_rows(model: _ClipModel, rng: np.random.Generator, m: int, text: bool) -> np.ndarray:
    z = rng.standard_normal((m, model.dim), dtype=np.float32)
    v = (z @ model.basis) / math.sqrt(model.dim)
    if text:
        return _normalize(v + model.p.text_cone * model.text_dir)
    return _normalize(v + model.p.cone * model.cone_dir)


def synthetic(
    n: int,
    dim: int = 512,
    *,
    kind: DataKind = "clip",
    seed: int = 0,
    params: ClipModelParams | None = None,
    query: QueryKind | None = None,
    n_db: int | None = None,
) -> np.ndarray:
    """``n`` seeded synthetic unit vectors (float32, shape ``(n, dim)``) of the given ``kind``.

    With ``query=None`` these are database rows; ``query="image"`` or ``"text"`` draws queries
    from a stream disjoint from the database rows (see the module docstring). ``n_db`` (the
    database size) is needed only for ``clustered`` queries, whose cluster count depends on it.
    """
    if n < 0 or dim < 2:
        raise ValueError("need n >= 0 and dim >= 2")
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}; choose one of {', '.join(DATA_KINDS)}")
    if query is not None and query not in QUERY_KINDS:
        raise ValueError(f"unknown query kind {query!r}; choose one of {', '.join(QUERY_KINDS)}")
    if kind == "clustered":
        from img_agent.testing import clip_like_vectors

        if query is None:
            return clip_like_vectors(n, dim, seed=seed)
        if n_db is None:
            raise ValueError("clustered queries need n_db, the database size (it sets the cluster count)")
        return clustered_queries(n_db, n, dim, seed, query)
    model = _ClipModel(dim, seed, params or ClipModelParams())
    out = np.empty((n, dim), dtype=np.float32)
    stream = _QUERY_STREAM if query is not None else 0
    for c, start in enumerate(range(0, n, _CHUNK)):
        stop = min(n, start + _CHUNK)
        rng = np.random.default_rng([seed, stream, c])
        # always draw a whole chunk, so row i does not depend on n (prefix-stable sets)
        if kind == "smooth":
            rows = _smooth_rows(model, rng, _CHUNK, text=query == "text")
        elif query == "text":
            rows = model.texts(rng, _CHUNK)
        else:
            rows = model.images(rng, _CHUNK)
        out[start:stop] = rows[: stop - start]
    return out


def clustered_queries(n_db: int, nq: int, dim: int, seed: int, query: QueryKind = "image", spread: float = 0.6) -> np.ndarray:
    """Held-out queries for :func:`img_agent.testing.clip_like_vectors` (same centres, fresh noise)."""
    rng = np.random.default_rng(seed)
    k = max(1, int(np.sqrt(n_db)))
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    qrng = np.random.default_rng([seed, _QUERY_STREAM])
    assign = qrng.integers(0, k, size=nq)
    scale = spread if query == "image" else 2.0 * spread  # text-like queries: vaguer
    noise = qrng.standard_normal((nq, dim)).astype(np.float32) * (scale / np.sqrt(dim))
    return _normalize(centres[assign] + noise)


# --------------------------------------------------------------------------------------------
# files


def read_fvecs(path: Path, *, limit: int | None = None) -> np.ndarray:
    """Read a ``.fvecs`` (or ``.bvecs``/``.ivecs``) file: each row is int32 dim then dim values."""
    path = Path(path)
    suffix = path.suffix.lower()
    dtype = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}.get(suffix)
    if dtype is None:
        raise ValueError(f"{path}: expected .fvecs, .ivecs or .bvecs")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: empty file")
    (dim,) = struct.unpack("<i", head)
    if not 0 < dim < 1_000_000:
        raise ValueError(f"{path}: bad dimension header {dim}; is this really {suffix}?")
    item = np.dtype(dtype).itemsize
    row_bytes = 4 + dim * item
    size = path.stat().st_size
    if size % row_bytes:
        raise ValueError(f"{path}: size {size} is not a multiple of the row size {row_bytes} (dim {dim})")
    rows = size // row_bytes
    if limit is not None:
        rows = min(rows, limit)
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(rows, row_bytes))
    out = np.ascontiguousarray(raw[:, 4:]).view(dtype).reshape(rows, dim)
    return out.astype(np.float32)


def write_fvecs(path: Path, x: np.ndarray) -> None:
    """Write float32 rows as ``.fvecs`` (used by the tests and to export synthetic sets)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    rows = np.empty((n, d + 1), dtype=np.float32)
    rows[:, 0] = np.array([d], dtype=np.int32).view(np.float32)[0]
    rows[:, 1:] = x
    rows.tofile(path)


def load_vectors(path: Path, *, limit: int | None = None) -> np.ndarray:
    """Load ``.npy`` (2-D, any float or int dtype) or ``.fvecs``/``.bvecs`` as float32 ``(n, d)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (give a .npy or .fvecs file)")
    if path.suffix.lower() == ".npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array (n, dim), got shape {arr.shape}")
        if limit is not None:
            arr = arr[:limit]
        return np.ascontiguousarray(arr, dtype=np.float32)
    return read_fvecs(path, limit=limit)


# --------------------------------------------------------------------------------------------
# datasets with ground truth


@dataclass
class QuerySet:
    """Queries and their exact neighbours in one :class:`Dataset` (by the dataset's metric)."""

    name: str
    xq: np.ndarray
    gt_ids: np.ndarray = field(repr=False)  # (nq, k) exact neighbours, best first
    gt_scores: np.ndarray = field(repr=False)  # (nq, k) similarity: inner product, or -L2² for l2
    info: dict = field(default_factory=dict)

    @property
    def nq(self) -> int:
        return int(self.xq.shape[0])


@dataclass
class Dataset:
    """Database rows plus one or more query sets (e.g. image-like and text-like queries)."""

    name: str
    xb: np.ndarray
    metric: Metric
    queries: list[QuerySet] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.xb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.xb.shape[1])


def exact_knn(xb: np.ndarray, xq: np.ndarray, k: int, metric: Metric = "ip") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (ids, similarity) with faiss brute force; similarity is IP or -L2²."""
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1]) if metric == "ip" else faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    k = min(k, xb.shape[0])
    scores, ids = index.search(xq, k)
    if metric == "l2":
        scores = -scores
    return ids.astype(np.int64), scores.astype(np.float32)


def similarity(xb: np.ndarray, xq: np.ndarray, ids: np.ndarray, metric: Metric = "ip") -> np.ndarray:
    """Exact similarity of each query with the given database ids (shape like ``ids``; -inf for -1)."""
    ids = np.asarray(ids)
    out = np.full(ids.shape, -np.inf, dtype=np.float32)
    valid = ids >= 0
    for i in range(ids.shape[0]):
        row = ids[i][valid[i]]
        if row.size == 0:
            continue
        vecs = xb[row]
        if metric == "ip":
            out[i, valid[i]] = vecs @ xq[i]
        else:
            diff = vecs - xq[i]
            out[i, valid[i]] = -np.einsum("ij,ij->i", diff, diff)
    return out


def make_dataset(
    *,
    n: int,
    nq: int,
    dim: int = 512,
    kind: DataKind = "clip",
    query_kinds: tuple[str, ...] = ("image",),
    seed: int = 0,
    data: Path | None = None,
    query_data: Path | None = None,
    metric: Metric = "ip",
    k: int = 100,
) -> Dataset:
    """Build a benchmark dataset: synthetic (``kind``, one query set per ``query_kinds``) or from
    ``data`` (``.npy``/``.fvecs``).

    From a file without ``query_data``, the last ``nq`` rows are held out as queries. With the
    ``ip`` metric rows are L2-normalised (cosine similarity, as the engine scores); use ``l2``
    for SIFT-style data.
    """
    if data is not None:
        xb = load_vectors(data, limit=None if query_data else n + nq)
        if query_data is not None:
            xq = load_vectors(query_data, limit=nq)
            xb = xb[:n]
        else:
            if xb.shape[0] <= nq:
                raise ValueError(f"{data}: {xb.shape[0]} rows is too few to hold out {nq} queries")
            xq = xb[-nq:]
            xb = xb[: min(n, xb.shape[0] - nq)]
        if xq.shape[1] != xb.shape[1]:
            raise ValueError(f"{query_data}: queries have dim {xq.shape[1]}, the data has {xb.shape[1]}")
        if metric == "ip":
            xb, xq = _normalize(xb.copy()), _normalize(xq.copy())
        name = Path(data).stem
        info = {"source": str(data)}
        qsets = [("file" if query_data else "held-out", xq, str(query_data) if query_data else "last rows held out")]
    else:
        xb = synthetic(n, dim, kind=kind, seed=seed)
        qsets = [
            (q, synthetic(nq, dim, kind=kind, seed=seed, query=q, n_db=n), f"synthetic {q} queries")  # type: ignore[arg-type]
            for q in query_kinds
        ]
        name = kind
        info = {"source": f"synthetic kind={kind} seed={seed}"}
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    ds = Dataset(name=name, xb=xb, metric=metric, info=info)
    ds.info.update(describe_base(ds))
    for qname, xq, src in qsets:
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        gt_ids, gt_scores = exact_knn(xb, xq, k, metric)
        qs = QuerySet(name=qname, xq=xq, gt_ids=gt_ids, gt_scores=gt_scores, info={"source": src})
        qs.info.update(describe_queries(ds, qs))
        ds.queries.append(qs)
    return ds


def describe_base(ds: Dataset, *, sample: int = 2000, seed: int = 0) -> dict:
    """``mean_cos``: mean cosine between random database pairs (the cone: CLIP images ≈ 0.4–0.5)."""
    rng = np.random.default_rng(seed)
    n = ds.n
    m = min(sample, n)
    a, b = rng.integers(0, n, size=m), rng.integers(0, n, size=m)
    xa, xb_ = ds.xb[a], ds.xb[b]
    na = np.linalg.norm(xa, axis=1) * np.linalg.norm(xb_, axis=1)
    mean_cos = float(np.mean(np.einsum("ij,ij->i", xa, xb_) / np.maximum(na, 1e-12)))
    return {"n": n, "dim": ds.dim, "metric": ds.metric, "mean_cos": round(mean_cos, 4)}


def describe_queries(ds: Dataset, qs: QuerySet, *, seed: int = 0) -> dict:
    """Difficulty statistics of a query set (reported with every result so runs are comparable).

    - ``q_top1`` / ``q_top10``: mean similarity of a query to its 1st / 10th exact neighbour;
    - ``lid``: local intrinsic dimensionality (Levina–Bickel MLE over the nearest neighbours'
      Euclidean distances, averaged over queries); higher is harder;
    - ``rc``: relative contrast, mean distance over nearest-neighbour distance (lower is harder).
    """
    rng = np.random.default_rng(seed)
    if ds.metric == "ip":
        qn = np.einsum("ij,ij->i", qs.xq, qs.xq)[:, None]
        rows = ds.xb[qs.gt_ids.ravel()]
        bn = np.einsum("ij,ij->i", rows, rows).reshape(qs.gt_ids.shape)
        d2 = np.maximum(qn + bn - 2 * qs.gt_scores, 0)
    else:
        d2 = np.maximum(-qs.gt_scores, 0)
    d = np.sqrt(d2) + 1e-12
    kk = d.shape[1]
    lid = float("nan")
    if kk >= 2:
        ratios = np.log(d[:, :-1] / d[:, -1:])
        lid = float(np.mean(-1.0 / np.minimum(ratios.mean(axis=1), -1e-12)))
    sub = ds.xb[rng.integers(0, ds.n, size=min(ds.n, 512))]
    dq2 = np.einsum("ij,ij->i", qs.xq, qs.xq)[:, None] + np.einsum("ij,ij->i", sub, sub)[None, :] - 2 * qs.xq @ sub.T
    rc = float(np.mean(np.sqrt(np.maximum(dq2, 0)).mean(axis=1) / d[:, 0]))
    return {
        "nq": qs.nq,
        "q_top1": round(float(np.mean(qs.gt_scores[:, 0])), 4),
        "q_top10": round(float(np.mean(qs.gt_scores[:, min(9, kk - 1)])), 4),
        "lid": round(lid, 2),
        "rc": round(rc, 3),
    }
