"""The systems of ``bench peers``: img-agent through its public engine, raw faiss, hnswlib, usearch, LanceDB.

Every system is built on the same float32 unit vectors (ids = row numbers) and answers through
:class:`Variant` objects: a label, ``search(xq, k, single)`` returning an ``(nq, k)`` int64 id array
(-1 where fewer than ``k`` came back) and, for approximate indexes, a search knob with a short
ladder that :mod:`img_agent.bench.peers` tunes. ``single=True`` is the one-thread single-query path
of the latency loop; batch calls may use every core. A peer library that is not installed is
reported by :func:`installed`, never imported at module load.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_FOR_512 = "ViT-B-32"  # a 512-d model name for the img-agent store; never loaded by add_vectors
ADD_BATCH = 10_000
HNSW_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REFINE_LADDER = (2, 5, 10, 20, 50)


def installed(module: str) -> bool:
    """Whether a peer library can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (a file's own size for a file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ivf_nlist(n: int) -> int:
    """The power of two nearest 4·√N, capped so k-means gets at least 39 points per list."""
    want = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    cap = 2 ** max(0, math.floor(math.log2(max(1, n // 39))))
    return int(max(1, min(want, cap)))


@dataclass
class Variant:
    """One measured row: how a built system is searched."""

    label: str
    search: Callable[[np.ndarray, int, bool], np.ndarray]
    knob: str | None = None  # the tuned search parameter, if any
    ladder: Sequence[int] = ()
    floor: float | None = None  # the R@10 the tuning must reach
    set_knob: Callable[[int], None] | None = None


class System:
    """A built index on the vectors ``x``; subclasses fill in build, variants, delete and disk."""

    key = "?"  # the name on the command line (--systems)
    name = "?"
    module: str | None = None  # the peer library that must be installed
    imports: tuple[str, ...] = ()  # modules imported before the build, so the RSS delta leaves them out
    delete_method = "?"

    def build(self, x: np.ndarray, folder: Path) -> None:
        raise NotImplementedError

    def variants(self) -> list[Variant]:
        raise NotImplementedError

    def delete(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    def disk_bytes(self) -> int:
        """Bytes of the index written to one file by :meth:`save` (stores with a folder override this)."""
        path = self.folder / f"{self.key}.index"
        self.save(path)
        size = path.stat().st_size
        path.unlink()
        return size

    def params(self) -> dict:
        return {}

    def close(self) -> None:
        """Release the index (the caller removes the folder)."""


def _faiss_search(index, xq: np.ndarray, k: int, params=None) -> np.ndarray:
    _, ids = index.search(np.ascontiguousarray(xq, dtype=np.float32), k, params=params)
    return ids.astype(np.int64)


class ImgAgent(System):
    """img-agent through ``Engine``: add_vectors in batches, then the first merge builds the trained index."""

    key = "img-agent"
    name = "img-agent"
    imports = ("img_agent.index.engine",)
    delete_method = "Engine.remove (logical, bitmap selector)"

    def build(self, x: np.ndarray, folder: Path) -> None:
        from img_agent.config import Settings
        from img_agent.index.engine import Engine

        self.folder = folder / "store"
        self.engine = Engine.open(Settings(data_dir=self.folder, model=MODEL_FOR_512, merge_threshold=10**12))
        for s in range(0, len(x), ADD_BATCH):
            e = min(len(x), s + ADD_BATCH)
            ids = self.engine.add_vectors(x[s:e], [f"/bench/img_{i:08d}.jpg" for i in range(s, e)])
            if ids[0] != s or ids[-1] != e - 1:
                raise RuntimeError(f"engine assigned ids {ids[0]}..{ids[-1]}, expected {s}..{e - 1}")
        self.engine.merge()

    def params(self) -> dict:
        s = self.engine.status()
        return {"index": s.index, "nlist": s.nlist, "nprobe": s.nprobe, "rerank_candidates": s.rerank_candidates}

    def _records(self, xq: np.ndarray, k: int, single: bool) -> np.ndarray:
        out = np.full((len(xq), k), -1, dtype=np.int64)
        for i, hits in enumerate(self.engine.search_vectors(xq, k)):
            got = [h.id for h in hits][:k]
            out[i, : len(got)] = got
        return out

    def _ids(self, xq: np.ndarray, k: int, single: bool) -> np.ndarray:
        out = np.full((len(xq), k), -1, dtype=np.int64)
        for i, (ids, _scores) in enumerate(self.engine.search_ids(xq, k)):
            got = np.asarray(ids, dtype=np.int64)[:k]
            out[i, : len(got)] = got
        return out

    def variants(self) -> list[Variant]:
        return [Variant("img-agent search_vectors (records)", self._records),
                Variant("img-agent search_ids (index part)", self._ids)]

    def delete(self, ids: np.ndarray) -> None:
        self.engine.remove(ids=[int(i) for i in ids])

    def disk_bytes(self) -> int:
        return folder_bytes(self.folder)

    def close(self) -> None:
        self.engine.close()


class _Faiss(System):
    def delete(self, ids: np.ndarray) -> None:
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))


class FaissFlat(_Faiss):
    key = "faiss-flat"
    name = "faiss Flat"
    module = "faiss"
    imports = ("faiss",)
    delete_method = "IndexIDMap.remove_ids"

    def build(self, x: np.ndarray, folder: Path) -> None:
        import faiss

        self.folder = folder
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(x.shape[1]))
        self.index.add_with_ids(x, np.arange(len(x), dtype=np.int64))

    def variants(self) -> list[Variant]:
        return [Variant("faiss Flat (exact)", lambda xq, k, single: _faiss_search(self.index, xq, k))]


class FaissIVF(_Faiss):
    key = "faiss-ivf"
    name = "faiss IVF-Flat"
    module = "faiss"
    imports = ("faiss",)
    delete_method = "IndexIVF.remove_ids"

    def build(self, x: np.ndarray, folder: Path) -> None:
        import faiss

        self.folder = folder
        self.nlist = ivf_nlist(len(x))
        quantizer = faiss.IndexFlatIP(x.shape[1])
        self.index = faiss.IndexIVFFlat(quantizer, x.shape[1], self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = 1234
        self.index.train(x)
        self.index.add(x)
        self._quantizer = quantizer  # owned by Python: keep it alive with the index

    def params(self) -> dict:
        return {"nlist": self.nlist}

    def _set(self, nprobe: int) -> None:
        self.index.nprobe = min(nprobe, self.nlist)

    def variants(self) -> list[Variant]:
        return [Variant(f"faiss IVF{self.nlist},Flat", lambda xq, k, single: _faiss_search(self.index, xq, k),
                        knob="nprobe", ladder=[p for p in NPROBE_LADDER if p <= self.nlist], floor=0.96,
                        set_knob=self._set)]


class FaissHNSW(_Faiss):
    key = "faiss-hnsw"
    name = "faiss HNSW32"
    module = "faiss"
    imports = ("faiss",)
    delete_method = "IDSelectorBitmap at search time"

    def build(self, x: np.ndarray, folder: Path) -> None:
        import faiss

        self.folder = folder
        self.index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.add(x)
        self.n = len(x)
        self.ef = 16
        self._bits: np.ndarray | None = None
        self._sel = None

    def params(self) -> dict:
        return {"M": 32, "efConstruction": int(self.index.hnsw.efConstruction)}

    def _set(self, ef: int) -> None:
        self.ef = ef

    def _search(self, xq: np.ndarray, k: int, single: bool) -> np.ndarray:
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.ef, k))
        if self._sel is not None:
            params.sel = self._sel
        return _faiss_search(self.index, xq, k, params)

    def variants(self) -> list[Variant]:
        return [Variant("faiss HNSW32,Flat", self._search, knob="efSearch", ladder=HNSW_LADDER, floor=0.95,
                        set_knob=self._set)]

    def delete(self, ids: np.ndarray) -> None:
        import faiss

        live = np.ones(self.n, dtype=bool)
        live[ids] = False
        self._bits = np.packbits(live, bitorder="little")
        self._sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(self._bits))


class Hnswlib(System):
    key = "hnswlib"
    name = "hnswlib"
    module = "hnswlib"
    imports = ("hnswlib",)
    delete_method = "mark_deleted (one call per id)"

    def build(self, x: np.ndarray, folder: Path) -> None:
        import hnswlib

        self.folder = folder
        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(max_elements=len(x), M=16, ef_construction=200, random_seed=100)
        self.index.add_items(x, np.arange(len(x)), num_threads=-1)

    def params(self) -> dict:
        return {"M": 16, "ef_construction": 200}

    def _search(self, xq: np.ndarray, k: int, single: bool) -> np.ndarray:
        labels, _ = self.index.knn_query(xq, k=k, num_threads=1 if single else -1)
        return labels.astype(np.int64)

    def variants(self) -> list[Variant]:
        return [Variant("hnswlib M16", self._search, knob="ef", ladder=HNSW_LADDER, floor=0.95,
                        set_knob=self.index.set_ef)]

    def delete(self, ids: np.ndarray) -> None:
        for i in ids:
            self.index.mark_deleted(int(i))

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))


class Usearch(System):
    key = "usearch"
    name = "usearch"
    module = "usearch"
    imports = ("usearch.index",)
    delete_method = "Index.remove"

    def build(self, x: np.ndarray, folder: Path) -> None:
        from usearch.index import Index

        self.folder = folder
        self.index = Index(ndim=x.shape[1], metric="ip")
        self.index.add(np.arange(len(x), dtype=np.uint64), x, threads=0)

    def params(self) -> dict:
        ix = self.index
        return {"dtype": str(ix.dtype).rsplit(".", 1)[-1].lower(), "connectivity": int(ix.connectivity),
                "expansion_add": int(ix.expansion_add)}

    def _set(self, ef: int) -> None:
        self.index.expansion_search = ef

    def _search(self, xq: np.ndarray, k: int, single: bool) -> np.ndarray:
        found = self.index.search(xq, k, threads=1 if single else 0)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(xq), -1)
        counts = np.asarray(found.counts if hasattr(found, "counts") else [len(found)]).reshape(-1)
        out = np.full((len(xq), k), -1, dtype=np.int64)
        for i, c in enumerate(counts):
            out[i, : min(c, k)] = keys[i, : min(c, k)]
        return out

    def variants(self) -> list[Variant]:
        return [Variant("usearch HNSW (defaults)", self._search, knob="expansion_search", ladder=HNSW_LADDER,
                        floor=0.95, set_knob=self._set)]

    def delete(self, ids: np.ndarray) -> None:
        self.index.remove(np.asarray(ids, dtype=np.uint64))

    def save(self, path: Path) -> None:
        self.index.save(str(path))


class LanceDB(System):
    """LanceDB IVF_PQ with its default partitions and sub-vectors, dot product (= cosine on unit vectors)."""

    key = "lancedb"
    name = "LanceDB"
    module = "lancedb"
    imports = ("lancedb", "pyarrow")
    delete_method = "Table.delete (id IN ..., 10k ids a call)"

    def build(self, x: np.ndarray, folder: Path) -> None:
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        self.folder = folder / "lancedb"
        db = lancedb.connect(str(self.folder))
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        self.table = db.create_table("vectors", pa.table({"id": pa.array(np.arange(len(x), dtype=np.int64)),
                                                          "vector": vectors}))
        self.table.create_index("vector", config=IvfPq(distance_type="dot"))
        self.refine = REFINE_LADDER[0]

    def params(self) -> dict:
        details = self.table.list_indices()[0].index_details or {}
        return {"index": "IVF_PQ", "compression": details.get("compression")}

    def _query(self, xq: np.ndarray, k: int, refine: int | None) -> np.ndarray:
        q = self.table.search(xq[0] if len(xq) == 1 else xq).distance_type("dot").limit(k)
        if refine:
            q = q.refine_factor(refine)
        res = q.select(["id", "_distance"]).to_arrow()
        out = np.full((len(xq), k), -1, dtype=np.int64)
        ids = res["id"].to_numpy()
        rows = res["query_index"].to_numpy() if "query_index" in res.column_names else np.zeros(len(ids), np.int64)
        fill = np.zeros(len(xq), dtype=np.int64)
        for row, i in zip(rows, ids):
            if fill[row] < k:
                out[row, fill[row]] = i
                fill[row] += 1
        return out

    def _set(self, refine: int) -> None:
        self.refine = refine

    def variants(self) -> list[Variant]:
        return [Variant("LanceDB IVF_PQ (defaults)", lambda xq, k, single: self._query(xq, k, None)),
                Variant("LanceDB IVF_PQ + refine", lambda xq, k, single: self._query(xq, k, self.refine),
                        knob="refine_factor", ladder=REFINE_LADDER, floor=0.95, set_knob=self._set)]

    def delete(self, ids: np.ndarray) -> None:
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        for s in range(0, len(ids), 10_000):
            self.table.delete("id IN (" + ",".join(str(int(i)) for i in ids[s : s + 10_000]) + ")")

    def disk_bytes(self) -> int:
        return folder_bytes(self.folder)


SYSTEMS: tuple[type[System], ...] = (ImgAgent, FaissFlat, FaissIVF, FaissHNSW, Hnswlib, Usearch, LanceDB)
SYSTEM_KEYS: tuple[str, ...] = tuple(s.key for s in SYSTEMS)

