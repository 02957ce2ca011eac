"""Near-duplicate images: groups of live images whose embeddings have cosine similarity >= a threshold.

Pairs are found with faiss range searches, never by comparing all pairs in Python: the current
main index is queried when it is a brute-force ``Flat`` index (exact and exhaustive; IVF and HNSW
indexes probe only part of the collection and compressed codes blur scores, so they would miss
pairs) and the compared images are at least half of it; otherwise an exact ``IndexFlatIP`` is
built over the compared vectors. The images are
queried in chunks, so memory stays bounded by the chunk's matches and progress is reported per
chunk. Groups are the connected components of the pairs (union-find), so a chain A~B~C is one
group even when A and C differ more.

Importing this module loads no numpy and no faiss (the tools' result models live here).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from img_agent.errors import InvalidInputError
from img_agent.results import DEFAULT_DUPLICATE_THRESHOLD, ImageRecord, ProgressCallback

if TYPE_CHECKING:
    import numpy as np

    from img_agent.index.state import State

SCORE_TOLERANCE = 1e-5
"""Float32 rounding: a pair scoring this little below the threshold still counts (1.0 finds identical vectors)."""
QUERY_CHUNK = 1024
"""Images queried per range search."""


class DuplicateImage(BaseModel):
    """One image of a duplicate group."""

    id: int = Field(description="Image id.")
    path: str = Field(description="Absolute path of the file when it was indexed.")
    width: int = Field(description="Pixel width (0 = unknown).")
    height: int = Field(description="Pixel height (0 = unknown).")
    size: int = Field(description="File size in bytes.")
    mtime: float = Field(description="File modification time (Unix seconds).")
    similarity: float = Field(description="Cosine similarity to the group's keeper (1.0 for the keeper itself).")
    keeper: bool = Field(description="Whether this is the suggested image to keep.")


class DuplicateGroup(BaseModel):
    """Images that show the same picture: linked by pairs at or above the threshold."""

    keeper: int = Field(description="Id of the suggested image to keep: most pixels, then most bytes, then the "
                        "oldest file, then the smallest id.")
    extras: list[int] = Field(description="Ids of the other images of the group (what removing duplicates removes).")
    images: list[DuplicateImage] = Field(description="The keeper first, then the others by similarity to it.")


class DuplicatesReport(BaseModel):
    """Groups of near-duplicate images, largest group first."""

    threshold: float = Field(description="Cosine similarity from which two images count as duplicates.")
    folder: str | None = Field(description="Only images under this folder were compared; null = the whole collection.")
    compared: int = Field(description="Images compared.")
    total_groups: int = Field(description="Duplicate groups found (all of them, even when fewer are listed).")
    total_extras: int = Field(description="Images beyond each group's keeper, over all groups.")
    groups: list[DuplicateGroup] = Field(description="Duplicate groups, largest first (possibly only the first ones).")
    truncated: bool = Field(False, description="True when only the first groups are listed.")
    method: str = Field(description="How pairs were found: 'main index' (the exact Flat main index) or 'exact flat' "
                        "(an exact index built for this call).")
    cancelled: bool = Field(False, description="True when the caller stopped it: the groups may be incomplete.")
    seconds: float = Field(description="Time taken.")

    def limited(self, max_groups: int) -> DuplicatesReport:
        """This report listing at most ``max_groups`` groups (the totals stay)."""
        if len(self.groups) <= max_groups:
            return self
        return self.model_copy(update={"groups": self.groups[:max_groups], "truncated": True})


def check_threshold(threshold: float | None) -> float:
    """``threshold`` as a float in (0, 1] (:data:`DEFAULT_DUPLICATE_THRESHOLD` when None).

    Raises:
        InvalidInputError: not a number, or outside (0, 1].
    """
    if threshold is None:
        return DEFAULT_DUPLICATE_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0 < threshold <= 1:
        raise InvalidInputError(
            f"The duplicate threshold must be a cosine similarity above 0 and at most 1, got {threshold!r}; "
            f"{DEFAULT_DUPLICATE_THRESHOLD} finds resized and re-encoded copies (1.0 = identical embeddings only)."
        )
    return float(threshold)


def folder_prefix(folder: str | Path) -> str:
    """The path prefix of images under ``folder`` (absolute; ends with '/')."""
    text = str(Path(folder).expanduser().absolute())
    return text if text.endswith("/") else text + "/"


def find_duplicates(
    state: State,
    threshold: float | None = None,
    folder: str | Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> DuplicatesReport:
    """Groups of live images (under ``folder``, if given) whose cosine similarity is >= ``threshold``.

    Only images under ``folder`` are compared with each other. See the module docstring for how.

    Raises:
        InvalidInputError: the threshold is outside (0, 1].
    """
    import numpy as np

    t0 = time.perf_counter()
    threshold = check_threshold(threshold)
    view = state.view
    allowed = view.live.copy()
    prefix = folder_prefix(folder) if folder is not None else None
    if prefix is not None:
        under = np.fromiter((i for i, _ in state.catalog.live_paths_under(prefix)), dtype=np.int64)
        mask = np.zeros_like(allowed)
        mask[under[under < len(mask)]] = True
        allowed &= mask
    ids = np.flatnonzero(allowed).astype(np.int64)
    # the main index compares with every stored vector: worth it unless a folder holds a small part of them
    method = "main index" if _main_is_exhaustive(view) and 2 * len(ids) >= view.n_live else "exact flat"
    pairs, cancelled = _pairs(state, view, ids, allowed, threshold - SCORE_TOLERANCE, method, progress, cancel)
    roots = _components(len(ids), pairs)
    groups = _groups(state, ids, roots)
    return DuplicatesReport(
        threshold=threshold, folder=(prefix.rstrip("/") or "/") if prefix else None, compared=len(ids),
        total_groups=len(groups), total_extras=sum(len(g.extras) for g in groups), groups=groups, method=method,
        cancelled=cancelled, seconds=round(time.perf_counter() - t0, 3),
    )


def _main_is_exhaustive(view) -> bool:
    """Whether the main index compares a query with every stored vector, exactly (a plain Flat index)."""
    plan = view.plan
    return view.main is not None and plan is not None and plan.exact_scores and not plan.nlist and not plan.is_hnsw


def _pairs(state: State, view, ids: np.ndarray, allowed: np.ndarray, radius: float, method: str,
           progress: ProgressCallback | None, cancel: threading.Event | None) -> tuple[np.ndarray, bool]:
    """Pairs (positions into ``ids``, first < second) of the compared images scoring >= ``radius``."""
    import faiss
    import numpy as np

    from img_agent.index import faiss_plan

    position = np.full(len(allowed), -1, dtype=np.int64)
    position[ids] = np.arange(len(ids))
    found: list[np.ndarray] = []
    if len(ids) < 2:
        return np.empty((0, 2), np.int64), False
    dim = state.vectors.dim
    targets = []  # (index, labels -> image ids; None: the labels are image ids)
    if method == "main index":
        # no selector: faiss answers a selector with its slow scalar path; tombstones and images outside the
        # folder are dropped from the matches instead (position -1)
        targets.append((view.main, None))
        in_buffer = allowed[view.buffer_ids]
        if np.any(in_buffer):
            buffer = faiss.IndexFlatIP(dim)
            buffer.add(np.ascontiguousarray(view.buffer_vecs[in_buffer], dtype=np.float32))
            targets.append((buffer, view.buffer_ids[in_buffer]))
    else:
        flat = faiss.IndexFlatIP(dim)
        for start in range(0, len(ids), faiss_plan.ADD_CHUNK):
            flat.add(state.vectors.get(ids[start : start + faiss_plan.ADD_CHUNK]))
        targets.append((flat, ids))
    cancelled = False
    for start in range(0, len(ids), QUERY_CHUNK):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        chunk = ids[start : start + QUERY_CHUNK]
        queries = state.vectors.get(chunk)
        for index, labels_to_ids in targets:
            lims, dist, labels = index.range_search(queries, radius)
            keep = dist >= radius
            rows = np.repeat(np.arange(len(chunk)), np.diff(lims).astype(np.int64))[keep]
            hit_ids = labels[keep] if labels_to_ids is None else labels_to_ids[labels[keep]]
            first, second = start + rows, position[hit_ids]
            ok = (second >= 0) & (first < second)
            found.append(np.stack([first[ok], second[ok]], axis=1))
        if progress is not None:
            progress(min(start + QUERY_CHUNK, len(ids)), len(ids), "comparing images")
    return (np.concatenate(found) if found else np.empty((0, 2), np.int64)), cancelled


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over ``n`` nodes: each node's component root (its smallest member)."""
    import numpy as np

    parent = np.arange(n, dtype=np.int64)
    a, b = pairs[:, 0], pairs[:, 1]
    while len(a):
        ra, rb = _find(parent, a), _find(parent, b)
        differ = ra != rb
        ra, rb = ra[differ], rb[differ]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))  # hook the larger root under the smaller
        a, b = ra, rb
    return _find(parent, np.arange(n, dtype=np.int64))


def _find(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Roots of ``nodes`` (parents always point to smaller nodes, so this ends); compresses their paths."""
    import numpy as np

    roots = parent[nodes]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            break
        roots = up
    parent[nodes] = roots
    return roots


def _groups(state: State, ids: np.ndarray, roots: np.ndarray) -> list[DuplicateGroup]:
    """The components with two or more images, described, largest first."""
    import numpy as np

    counts = np.bincount(roots, minlength=len(ids)) if len(ids) else np.zeros(0, np.int64)
    members = np.flatnonzero(counts[roots] >= 2)
    if not len(members):
        return []
    order = members[np.argsort(roots[members], kind="stable")]
    split = np.flatnonzero(np.diff(roots[order])) + 1
    records = state.catalog.records(ids[order].tolist(), include_deleted=True)
    groups = []
    for positions in np.split(order, split):
        group_ids = ids[positions]
        recs = [records[int(i)] for i in group_ids if int(i) in records]
        if len(recs) < 2:
            continue
        keeper = min(recs, key=keeper_key)
        vecs = state.vectors.get(np.array([r.id for r in recs]))
        sims = vecs @ state.vectors.get(np.array([keeper.id]))[0]
        images = [
            DuplicateImage(id=r.id, path=r.path, width=r.width, height=r.height, size=r.size, mtime=r.mtime,
                           similarity=1.0 if r.id == keeper.id else round(float(s), 6), keeper=r.id == keeper.id)
            for r, s in zip(recs, sims.tolist())
        ]
        images.sort(key=lambda im: (not im.keeper, -im.similarity, im.id))
        groups.append(DuplicateGroup(keeper=keeper.id, extras=[im.id for im in images[1:]], images=images))
    groups.sort(key=lambda g: (-len(g.images), g.keeper))
    return groups


def keeper_key(record: ImageRecord) -> tuple[int, int, float, int]:
    """Sort key of the image to keep: most pixels, then most bytes, then the oldest file, then the smallest id."""
    return (-record.width * record.height, -record.size, record.mtime, record.id)
