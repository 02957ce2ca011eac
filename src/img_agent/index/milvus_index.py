"""One store's vectors and filter fields in a Milvus collection (Milvus Lite file, standalone or cluster).

The catalog stays the authority on ids, paths and notes; the collection holds, per live image, its
unit vector and the fields filters need (:func:`~img_agent.index.milvus_filter.entity`), keyed by the
catalog's id. Every committed add is upserted and every removal deleted after the catalog commit,
under the store's write lock; opening compares the collection with the catalog and repairs what a
crash between the two left (:meth:`MilvusIndex.sync`). Searches use the metric IP on unit vectors
(cosine, higher is better, the scale of the faiss backend) with the filter as a boolean expression
inside the ANN search.

The index type follows the collection's size (:func:`index_plan`): FLAT (exact) while small, then
IVF_FLAT on Milvus Lite, HNSW on a server. Consistency is Strong: an add is searchable as soon as
it returns, in this process and in every other client of the collection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.errors import ConfigError, VectorStoreError

log = logging.getLogger(__name__)

FLAT_MAX_LITE = 100_000
"""Milvus Lite searches exactly (FLAT) up to this many images, then through IVF_FLAT."""
FLAT_MAX_SERVER = 20_000
"""A Milvus server searches exactly up to this many images, then through HNSW."""
WRITE_CHUNK = 2_000
"""Entities per upsert request (a request stays far below gRPC's 64 MiB message limit at 2048-d)."""
OWNER_PROPERTY = "img_agent.store"
"""Collection property naming the store (catalog meta ``store_id``) whose images the collection holds."""
ID_WINDOW = 16_384
"""Ids listed per query (Milvus caps a query's result at 16,384 rows)."""
INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW")
"""Index types a rebuild may ask for by name ('auto' chooses by size)."""


def is_milvus_uri(value: str) -> bool:
    """Whether ``value`` names a Milvus deployment rather than the in-process faiss engine."""
    return value.endswith(".db") or value.startswith(("http://", "https://", "tcp://", "unix:"))


def is_lite_uri(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite file (embedded, opened in this process)."""
    return uri.endswith(".db") and not uri.startswith(("http://", "https://"))


def normal_uri(value: str) -> str:
    """``value`` with a Milvus Lite file made absolute (so the store finds it from any working directory).

    Raises:
        ConfigError: not 'faiss' and not a Milvus URI.
    """
    value = value.strip()
    if value == "faiss":
        return value
    if not is_milvus_uri(value):
        raise ConfigError(
            f"vector_store {value!r} is neither 'faiss' nor a Milvus URI; use 'faiss', a Milvus Lite file such as "
            "'~/images/milvus.db', or a server such as 'http://localhost:19530'.")
    if value.endswith(".db") and not value.startswith(("http://", "https://", "tcp://")):
        return str(Path(value).expanduser().resolve())
    return value


@dataclass(frozen=True)
class IndexPlan:
    """A Milvus index type with its build and search parameters."""

    index_type: str
    build: dict
    search: dict

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in {**self.build, **self.search}.items())
        return f"milvus {self.index_type}" + (f" ({params})" if params else "")


def index_plan(n: int, *, lite: bool, choice: str = "auto") -> IndexPlan:
    """The index for ``n`` images: exact while small, then IVF_FLAT (Lite) or HNSW (server); or ``choice``."""
    kind = choice.upper() if choice and choice != "auto" else None
    if kind is None:
        kind = "FLAT" if n <= (FLAT_MAX_LITE if lite else FLAT_MAX_SERVER) else ("IVF_FLAT" if lite else "HNSW")
    if kind not in INDEX_TYPES:
        raise ConfigError(f"Milvus index type {choice!r} is not one img-agent uses; choose one of "
                          f"{', '.join(INDEX_TYPES)} or 'auto'.")
    if kind == "FLAT":
        return IndexPlan("FLAT", {}, {})
    if kind == "HNSW":
        return IndexPlan("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 128})
    nlist = int(min(65_536, max(16, 4 * math.sqrt(max(n, 1)))))
    return IndexPlan(kind, {"nlist": nlist}, {"nprobe": max(16, min(nlist, nlist // 8))})


class MilvusIndex:
    """The collection of one store. Thread-safe as the pymilvus client is; one per open store."""

    def __init__(self, uri: str, *, collection: str, token: str | None = None, db_name: str | None = None) -> None:
        self.uri = uri
        self.collection = collection
        self.lite = is_lite_uri(uri)
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise ConfigError("The Milvus vector store needs pymilvus (and milvus-lite for a local .db file): "
                              "pip install 'img-agent[milvus]'.") from exc
        kwargs: dict[str, Any] = {"uri": uri}
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        if self.lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            # Milvus Lite's in-process gRPC server logs every call it leaves to the client (AllocTimestamp when an
            # index is built) as an ERROR with a traceback, and pymilvus then falls back; keep that off the screen.
            logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        try:
            self._client = MilvusClient(**kwargs)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises many kinds; every one means "cannot connect"
            raise VectorStoreError(
                f"Cannot open the Milvus vector store {uri} ({_reason(exc)}). Check that the server runs and the "
                "URI, token and database are right; a Milvus Lite file can be open in one process only, so stop "
                "other programs using it ('img-agent service stop').") from exc
        self.plan: IndexPlan | None = None

    # -- collection ---------------------------------------------------------------------------
    def ensure(self, dim: int, owner: str) -> None:
        """Create the collection for ``dim``-d vectors unless it exists; load it; check its dimension and that it
        belongs to the store ``owner`` (its id): a collection written by another store is never touched, since
        its ids mean other images and bringing it in step with this catalog would delete them."""
        from pymilvus import DataType

        with _calls(self.uri, "prepare the collection"):
            client = self._client
            if not client.has_collection(self.collection):
                schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
                for name in ("path", "path_folded", "camera_folded", "description_folded"):
                    schema.add_field(name, DataType.VARCHAR, max_length=65_535)
                schema.add_field("sha256", DataType.VARCHAR, max_length=64)
                schema.add_field("format", DataType.VARCHAR, max_length=32)
                for name in ("size", "width", "height"):
                    schema.add_field(name, DataType.INT64)
                schema.add_field("mtime", DataType.DOUBLE)
                for name in ("taken_at", "gps_lat", "gps_lon"):
                    schema.add_field(name, DataType.DOUBLE, nullable=True)
                schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=256,
                                 max_length=256)
                plan = index_plan(0, lite=self.lite)
                client.create_collection(self.collection, schema=schema, index_params=self._index_params(plan),
                                         consistency_level="Strong")
            described = client.describe_collection(self.collection)
            fields = {f["name"]: f for f in described["fields"]}
            have = int(fields["vector"].get("params", {}).get("dim", dim)) if "vector" in fields else None
            if have != dim:
                raise VectorStoreError(
                    f"The Milvus collection {self.collection!r} at {self.uri} holds {have}-d vectors but this store "
                    f"holds {dim}-d ones. Give this store its own collection (IMG_AGENT_MILVUS_COLLECTION).")
            client.load_collection(self.collection)
            self.check_owner(owner, described)
            self.plan = self._current_plan()

    def check_owner(self, owner: str, described: dict | None = None) -> None:
        """Claim the collection for store ``owner`` when it is new and empty; refuse one another store wrote."""
        with _calls(self.uri, "check the collection"):
            client = self._client
            if described is None:
                if not client.has_collection(self.collection):
                    return
                client.load_collection(self.collection)
                described = client.describe_collection(self.collection)
            held_by = (described.get("properties") or {}).get(OWNER_PROPERTY)
            if held_by is None and self.count() == 0:
                client.alter_collection_properties(self.collection, properties={OWNER_PROPERTY: owner})
            elif held_by != owner:
                whose = f"another img-agent store ({held_by})" if held_by else "something other than img-agent"
                raise VectorStoreError(
                    f"The Milvus collection {self.collection!r} at {self.uri} was written by {whose}; this store "
                    "will not touch it. Give this store a collection of its own with IMG_AGENT_MILVUS_COLLECTION. "
                    "If this data directory was repaired or made anew, the collection still holds the old store's "
                    "vectors (its catalog is in lost+found/): index the folders again into a new collection, and drop "
                    "the old one once nothing needs it.")

    def _index_params(self, plan: IndexPlan) -> Any:
        params = self._client.prepare_index_params()
        params.add_index(field_name="vector", index_type=plan.index_type, metric_type="IP", params=plan.build)
        return params

    def _current_plan(self) -> IndexPlan:
        info = self._client.describe_index(self.collection, "vector") or {}
        kind = str(info.get("index_type", "FLAT"))
        n = self.count()
        plan = index_plan(n, lite=self.lite, choice=kind if kind in INDEX_TYPES else "auto")
        build = {key: int(info[key]) for key in plan.build if key in info}
        return IndexPlan(plan.index_type, build or plan.build, plan.search)

    def reindex(self, choice: str = "auto") -> IndexPlan:
        """Compact, then build the index ``choice`` (or the one fitting the size) in place of the current one."""
        with _calls(self.uri, "rebuild the index"):
            client = self._client
            client.flush(self.collection)
            try:
                client.compact(self.collection)
            except Exception as exc:  # noqa: BLE001 - Lite compacts on its own; a refusal leaves the data as it is
                log.debug("Milvus compaction not run: %s", exc)
            plan = index_plan(self.count(), lite=self.lite, choice=choice)
            before = self.plan or index_plan(0, lite=self.lite)
            client.release_collection(self.collection)
            client.drop_index(self.collection, "vector")
            try:
                client.create_index(self.collection, self._index_params(plan))
            except Exception:
                client.create_index(self.collection, self._index_params(before))  # the collection stays searchable
                raise
            finally:
                client.load_collection(self.collection)
            self.plan = plan
            return plan

    def outgrown(self) -> bool:
        """Whether the collection, searched exactly so far, has grown past the size for exact search."""
        return (self.plan is not None and self.plan.index_type == "FLAT"
                and index_plan(self.count(), lite=self.lite).index_type != "FLAT")

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, entities: Sequence[dict]) -> None:
        with _calls(self.uri, "store vectors"):
            for start in range(0, len(entities), WRITE_CHUNK):
                self._client.upsert(self.collection, list(entities[start : start + WRITE_CHUNK]))

    def delete(self, ids: Sequence[int]) -> None:
        ids = [int(i) for i in ids]
        with _calls(self.uri, "delete vectors"):
            for start in range(0, len(ids), WRITE_CHUNK):
                self._client.delete(self.collection, ids=ids[start : start + WRITE_CHUNK])

    def flush(self) -> None:
        """Seal growing segments (Milvus builds their index); the data is durable before this already."""
        with _calls(self.uri, "flush"):
            self._client.flush(self.collection)

    # -- reads --------------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int, expr: str, nprobe: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query row, (ids, cosine scores) best first, at most ``k``, allowed by ``expr``; ``nprobe`` replaces
        the plan's for IVF indexes."""
        plan = self.plan or index_plan(0, lite=self.lite)
        params = dict(plan.search)
        if nprobe is not None and "nprobe" in params:
            params["nprobe"] = nprobe
        with _calls(self.uri, "search"):
            found = self._client.search(
                self.collection, data=[row.tolist() for row in q], limit=k, filter=expr, output_fields=[],
                anns_field="vector", search_params={"metric_type": "IP", "params": params},
            )
        out = []
        for hits in found:
            ids = np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits))
            scores = np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))
            out.append((ids, scores))
        return out

    def query_ids(self, upper: int, expr: str = "") -> np.ndarray:
        """Ids (ascending) below ``upper`` of the entities ``expr`` allows ("": all), read window by window."""
        got: list[int] = []
        with _calls(self.uri, "list ids"):
            for low in range(0, upper, ID_WINDOW):
                window = f"id >= {low} and id < {min(upper, low + ID_WINDOW)}"
                rows = self._client.query(self.collection, filter=f"{window} and ({expr})" if expr else window,
                                          output_fields=["id"])
                got.extend(int(r["id"]) for r in rows)
        return np.unique(np.asarray(got, dtype=np.int64))

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of ``ids`` (those present)."""
        out: dict[int, np.ndarray] = {}
        with _calls(self.uri, "read vectors"):
            for start in range(0, len(ids), WRITE_CHUNK):
                chunk = [int(i) for i in ids[start : start + WRITE_CHUNK]]
                for row in self._client.get(self.collection, ids=chunk, output_fields=["vector"]):
                    out[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
        return out

    def count(self) -> int:
        with _calls(self.uri, "count"):
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stats(self) -> dict[str, Any]:
        """Collection, index and segment facts for ``status``."""
        with _calls(self.uri, "read statistics"):
            info = self._client.describe_index(self.collection, "vector") or {}
        return {"rows": self.count(), "indexed_rows": info.get("indexed_rows"),
                "pending_index_rows": info.get("pending_index_rows"), "index_state": info.get("state")}

    # -- keeping in step with the catalog ------------------------------------------------------
    def sync(self, live: np.ndarray, upper: int, entities_of: Callable[[np.ndarray], list[dict]],
             progress: Callable[[int, int, str], None] | None = None) -> tuple[int, int]:
        """Make the collection hold exactly the ``live`` ids (all below ``upper``, the catalog's next id): upsert
        the missing, delete the others. Returns (upserted, deleted).
        """
        present = self.query_ids(upper)
        missing = np.setdiff1d(live, present, assume_unique=True)
        extra = np.setdiff1d(present, live, assume_unique=True)
        for start in range(0, len(missing), WRITE_CHUNK):
            self.upsert(entities_of(missing[start : start + WRITE_CHUNK]))
            if progress:
                progress(min(len(missing), start + WRITE_CHUNK), len(missing), "copying vectors to Milvus")
        if len(extra):
            self.delete(extra.tolist())
        if len(missing) or len(extra):
            self.flush()
        return len(missing), len(extra)

    def drop(self) -> None:
        """Delete the collection (every vector in it)."""
        with _calls(self.uri, "drop the collection"):
            if self._client.has_collection(self.collection):
                self._client.drop_collection(self.collection)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead connection is not worth failing a close
            log.debug("closing the Milvus client: %s", exc)


class _calls:
    """Turns a pymilvus failure into :class:`VectorStoreError` naming the action and what to do."""

    def __init__(self, uri: str, action: str) -> None:
        self.uri, self.action = uri, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, (VectorStoreError, ConfigError)) or not isinstance(exc, Exception):
            return False
        raise VectorStoreError(
            f"Milvus at {self.uri} could not {self.action} ({_reason(exc)}). Check that it runs and is reachable; "
            "the catalog keeps every committed image, and the next open copies what Milvus missed.") from exc


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]
