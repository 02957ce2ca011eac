"""Benchmark datasets: database rows and query sets with their exact neighbours.

Rows are synthetic (:mod:`img_agent.bench.synthetic`) or read from ``.npy`` / ``.fvecs`` /
``.bvecs`` files. Every dataset's difficulty is reported (cosine statistics, local intrinsic
dimensionality), so a user can compare it with their own embeddings (``--data``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from img_agent.bench.synthetic import DataKind, normalize_rows, synthetic

Metric = Literal["ip", "l2"]


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
            xb, xq = normalize_rows(xb.copy()), normalize_rows(xq.copy())
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
