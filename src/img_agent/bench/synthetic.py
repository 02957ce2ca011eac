"""Seeded synthetic embeddings for the benchmarks, unit-normalised like CLIP features (512-d by default).

Models (``kind``):

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

    The structure (basis, spectrum, concept centres) is fixed by ``seed`` and independent of
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
product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from img_agent.bench.kinds import DATA_KINDS, QUERY_KINDS

DataKind = Literal["clip", "clustered", "smooth"]
QueryKind = Literal["image", "text"]

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
        x = normalize_rows(x)
        ndup = int(round(p.dup_fraction * m))
        if ndup and m > 1:
            dst = rng.choice(np.arange(1, m), size=min(ndup, m - 1), replace=False)
            src = (rng.random(dst.size) * dst).astype(np.int64)  # an earlier row of this chunk
            noise = rng.standard_normal((dst.size, self.dim), dtype=np.float32) * (p.dup_noise / math.sqrt(self.dim))
            x[dst] = normalize_rows(x[src] + noise)
        return x

    def texts(self, rng: np.random.Generator, m: int) -> np.ndarray:
        p = self.p
        z, _ = self._latent(rng, m, p.text_noise)
        v = (z @ self.basis) / math.sqrt(self.dim)
        return normalize_rows(v + p.text_cone * self.text_dir)


def _zipf(n: int, a: float) -> np.ndarray:
    w = (np.arange(n) + 1.0) ** -a
    return w / w.sum()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in place when ``x`` is already float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    x /= norms
    return x


def _smooth_rows(model: _ClipModel, rng: np.random.Generator, m: int, text: bool) -> np.ndarray:
    z = rng.standard_normal((m, model.dim), dtype=np.float32)
    v = (z @ model.basis) / math.sqrt(model.dim)
    if text:
        return normalize_rows(v + model.p.text_cone * model.text_dir)
    return normalize_rows(v + model.p.cone * model.cone_dir)


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
    return normalize_rows(centres[assign] + noise)
