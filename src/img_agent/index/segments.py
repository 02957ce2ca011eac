"""Segments of the main index: merges that copy nothing, searched together with one coarse quantisation.

A plain IVF main index (``IVF{nlist},{codes}``, what the automatic rule builds) is never modified once
published. A merge encodes the buffer into a new small **segment**: an empty twin of the main index
(the same trained coarse quantizer and codebooks, no vectors) filled with the buffer's vectors, so a
merge costs the encoding of the buffer only, not a copy of the whole index. Searches quantise the
query once with the main index's quantizer and scan the same lists of the main index and of every
segment (``search_preassigned``), so results are those of one index holding everything.

When :data:`MAX_SEGMENTS` exist they are folded into one (copying only their own codes). They are
compacted into the main index (:func:`compact`: a copy of it, then each segment's codes moved in, no
re-encoding) in a background thread once they hold enough vectors to be worth writing to disk, and on
close; compaction is the checkpoint that writes the main index file.

Indexes with a transform in front (OPQ, PCA), HNSW and Flat are not segmented: a merge into them
copies the index as before (Flat only serves collections up to 50k images, so that copy is small).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_SEGMENTS = 8
"""Segments searched beside the main index before a compaction folds them in."""


def segmentable(index: Any) -> bool:
    """Whether ``index`` is a plain IVF index (no transform, no id map), which segments can extend."""
    import faiss

    if index is None:
        return False
    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def empty_twin(index: Any) -> Any | None:
    """An empty, trained copy of ``index`` (coarse quantizer and codebooks; no vectors), or None when
    it cannot be segmented. ``index`` must not be searched or changed meanwhile (call it before publishing).
    """
    import faiss

    if not segmentable(index):
        return None
    ivf = faiss.downcast_index(index)
    lists, owned, total = ivf.invlists, ivf.own_invlists, ivf.ntotal
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.own_invlists = False  # keep the real lists alive while they are swapped out
    ivf.replace_invlists(empty, False)
    ivf.ntotal = 0
    try:
        return faiss.clone_index(ivf)
    finally:
        ivf.replace_invlists(lists, owned)
        ivf.ntotal = total


def new_segment(twin: Any, ids: np.ndarray, vecs: np.ndarray, chunk: int = 65_536) -> Any:
    """A segment holding ``vecs`` under ``ids``, encoded with the codebooks of ``twin``."""
    import faiss

    segment = faiss.clone_index(twin)
    for start in range(0, len(ids), chunk):
        segment.add_with_ids(np.ascontiguousarray(vecs[start : start + chunk], dtype=np.float32),
                             np.ascontiguousarray(ids[start : start + chunk], dtype=np.int64))
    return segment


def compact(main: Any, segments: Sequence[Any]) -> Any:
    """A new index holding ``main`` and every segment: a copy of ``main`` with the segments' codes moved
    in (copies of them: the published segments stay intact for searches running meanwhile)."""
    import faiss

    out = faiss.clone_index(main)
    for segment in segments:
        out.merge_from(faiss.clone_index(segment), 0)
    return out


def search(main: Any, segments: Sequence[Any], q: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (inner products, labels; -1 where fewer) over ``main`` and ``segments``, as one index would answer.

    ``params`` is a ``SearchParametersIVF`` (nprobe and selector); the query is quantised once.
    """
    import faiss

    n = len(q)
    q = np.ascontiguousarray(q, dtype=np.float32)
    nprobe = int(params.nprobe)
    coarse_d, coarse_i = faiss.downcast_index(main).quantizer.search(q, nprobe)
    coarse_d = np.ascontiguousarray(coarse_d, dtype=np.float32)
    coarse_i = np.ascontiguousarray(coarse_i, dtype=np.int64)
    dists, labels = [], []
    for index in (main, *segments):
        kk = max(1, min(k, index.ntotal))
        d = np.empty((n, kk), dtype=np.float32)
        i = np.empty((n, kk), dtype=np.int64)
        index.search_preassigned_c(n, faiss.swig_ptr(q), kk, faiss.swig_ptr(coarse_i), faiss.swig_ptr(coarse_d),
                                   faiss.swig_ptr(d), faiss.swig_ptr(i), False, params)
        dists.append(d)
        labels.append(i)
    d, i = np.concatenate(dists, axis=1), np.concatenate(labels, axis=1)
    d = np.where(i >= 0, d, -np.inf).astype(np.float32)
    order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
