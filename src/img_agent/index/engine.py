"""The engine: the one facade over encoder, catalog, vector store and Faiss index.

Double-buffer design, durable and thread-safe:

- a trained **main index** (one file per generation, ``index/gen-000042.faiss``),
- an exact in-memory **buffer** of recently added vectors (rebuilt from the catalog at open),
- a **deleted** set, excluded inside every search by a bitmap selector over the dense id space.

This module opens and closes a store (checks, lock and read-only mode live in
:mod:`~img_agent.index.store_files`; the model identity and the lazy encoder here) and delegates: adds and removes to :mod:`~img_agent.index.ingest`, searches to
:mod:`~img_agent.index.search`, merge / rebuild / status to :mod:`~img_agent.index.maintenance`;
what they share is :class:`~img_agent.index.state.State`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from img_agent.config import Settings
from img_agent.errors import ImageDecodeError, InvalidInputError, ModelLoadingError, NotFoundError, StoreError
from img_agent.index import faiss_plan
from img_agent.index.collapse import collapse_hit_list, ranked_hits
from img_agent.index.duplicates import DuplicatesReport, find_duplicates
from img_agent.index.failures import read_only
from img_agent.index.ingest import Ingest
from img_agent.index.ray_ingest import RayCluster
from img_agent.index.maintenance import Maintenance
from img_agent.index.milvus_backend import attach
from img_agent.index.notes import Notes
from img_agent.index.search import Ranked, Searcher, normalise
from img_agent.index.state import State
from img_agent.index.terms import Term, search_terms
from img_agent.index.store_files import Opened, open_store
from img_agent.results import (AddReport, BackupReport, ImageRecord, IndexStatus, MaintenanceReport, MigrateReport,
                               ProgressCallback, RemoveReport, SearchFilter, SearchHit, check_k)

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder
    from img_agent.embed.images import Confinement

log = logging.getLogger(__name__)


class Engine:
    """Index, search and maintain one image collection. Thread-safe; one per data directory."""

    def __init__(self, settings: Settings, opened: Opened, encoder: ClipEncoder | None, model_wait: float | None = None):
        self.settings = settings
        self.catalog = opened.catalog
        self.store = opened.vectors
        self.model = opened.model
        self.pretrained = opened.pretrained
        self.data_dir = settings.data_dir
        self.read_only = opened.read_only
        self._opened = opened
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        self._model_wait = model_wait
        self._loading_since: float | None = None
        self._state = State(settings, self.catalog, self.store, read_only=self.read_only, notices=opened.notices)
        self.index_dir = self._state.index_dir
        attach(self._state)  # the vector store (faiss, or a Milvus collection) and the view
        self._maintenance = Maintenance(self._state)
        self._ingest = Ingest(self._state, self._maintenance)
        self._searcher = Searcher(self._state)
        self.notes = Notes(self._state)  # tags and descriptions (write lock, read-only refusal: see Notes)
        if self._state.damaged_main and not self.read_only:
            self._maintenance.merge()  # every image went back to the buffer: build a new main index from it

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, encoder: ClipEncoder | None = None, *, model_wait: float | None = None) -> Engine:
        """Open (or create) the store in ``settings.data_dir``. The model loads on first need.

        With ``model_wait``, a call that needs the model while another thread loads it waits at most
        that many seconds, then raises :class:`ModelLoadingError` (servers answer "retry" instead of
        keeping a caller waiting for a cold model).
        """
        opened = open_store(settings, encoder)
        try:
            return cls(settings, opened, encoder, model_wait)
        except BaseException:
            opened.close()
            raise

    def close(self) -> None:
        """Checkpoint pending merges (so the next open is quick) and release the store."""
        if not self.read_only:
            try:
                self.checkpoint()
            except Exception as exc:  # noqa: BLE001 - merges stay recorded in the catalog; reopening re-adds them
                log.warning("could not write the main index on close (%s); it is rebuilt from vectors at next open", exc)
        try:
            if self._state.external is not None:
                self._state.external.close()  # flushes Milvus, records that it is in step
        finally:
            self._opened.close()

    def _writable(self) -> None:
        """Raise :class:`StoreReadOnlyError` when the store was opened read-only."""
        if self.read_only:
            raise read_only(self.data_dir)

    def backup(self, dest: Path | str) -> BackupReport:
        """A consistent copy of the store in the new folder ``dest`` (see :mod:`~img_agent.index.backup`)."""
        from img_agent.index.backup import backup_store

        return backup_store(self._state, Path(dest).expanduser())

    def migrate(self, to: str, progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> MigrateReport:
        """Move the vectors to ``to`` ('faiss' or a Milvus URI), ids kept, resumable (:mod:`~img_agent.index.migrate`)."""
        from img_agent.index.migrate import migrate

        self._writable()
        return migrate(self._state, self._maintenance, to, progress=progress, cancel=cancel)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- model --------------------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        """Embedding dimension (None until the first vector or model load on a new store)."""
        return self.store.dim if self.store.dim is not None else (self._encoder.dim if self._encoder else None)

    @property
    def encoder(self) -> ClipEncoder:
        """The CLIP encoder, built on first use (seconds for real models)."""
        return self._load_encoder(self._model_wait)

    def _load_encoder(self, model_wait: float | None) -> ClipEncoder:
        if self._encoder is None:
            wait = model_wait if self._loading_since is not None else None
            if not self._encoder_lock.acquire(timeout=-1 if wait is None else wait):
                since = time.monotonic() - (self._loading_since or time.monotonic())
                raise ModelLoadingError(
                    f"The CLIP model {self.model} is still loading ({since:.0f} s so far; loading takes seconds to a "
                    "minute); call again in a few seconds."
                )
            try:
                if self._encoder is None:
                    from img_agent.embed.encoder import get_encoder

                    self._loading_since = time.monotonic()
                    try:
                        encoder = get_encoder(self.model, self.pretrained, self.settings.device, self.settings.inference)
                    finally:
                        self._loading_since = None
                    self.catalog.bind_model(self.model, self.pretrained, encoder.dim)
                    if self.store.dim is not None and self.store.dim != encoder.dim:
                        raise StoreError(
                            f"Model {self.model} gives {encoder.dim}-d vectors but the store holds {self.store.dim}-d. "
                            "Use another --data-dir for this model."
                        )
                    self._encoder = encoder
            finally:
                self._encoder_lock.release()
        return self._encoder

    def warm_up(self) -> None:
        """Load the model now, waiting for it however long that takes (servers call this in a background
        thread; long jobs call it before they start)."""
        self._load_encoder(None)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_text(list(texts))

    def encode_image(self, image: Path | str | bytes) -> np.ndarray:
        """Embedding of one image given as a file path or encoded bytes."""
        from img_agent.embed.decode import decode_image_bytes
        from img_agent.embed.images import read_image_file

        s = self.settings
        if isinstance(image, (bytes, bytearray)):
            if len(image) > s.max_file_bytes:
                raise ImageDecodeError(f"image data is {len(image):,} bytes, over the limit of {s.max_file_bytes:,}.")
            pil = decode_image_bytes(bytes(image), max_pixels=s.max_image_pixels, draft_size=self.encoder.image_size)[0]
        else:
            path = Path(image).expanduser()
            if not path.is_file():
                raise NotFoundError(f"No image file at {path}. Check the path (absolute paths are safest).")
            pil = read_image_file(path, max_bytes=s.max_file_bytes, max_pixels=s.max_image_pixels,
                                  draft_size=self.encoder.image_size).image
        return self.encoder.encode_images([pil])[0]

    # -- adding and removing ------------------------------------------------------------------
    def add_paths(
        self,
        paths: Iterable[str | Path], *, recursive: bool = True, remove_missing: bool = False,
        progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
        confine: Confinement | None = None, walked: bool = False, ray: RayCluster | None = None,
    ) -> AddReport:
        """Index image files and folders. New or changed files are encoded; the rest is reported.

        Each encoded batch is durable and searchable as soon as it is committed. With
        ``remove_missing``, images indexed under the given folders whose files are gone are removed.
        With ``confine`` the walk follows no symbolic link out of the allowed folders (see
        :func:`~img_agent.embed.images.iter_image_files`), and the given folders are not recorded
        as :meth:`indexed_roots`: a confined caller cannot widen what later sessions allow. Files removed by
        request are skipped when a folder walk finds them and added again when named themselves (with
        ``walked``, every path counts as found by a walk: a folder watch reports them so). ``ray``: encode on Ray.
        """
        self._writable()
        scan = self._ingest.scan(paths, recursive=recursive, confine=confine, walked=walked)
        return self._ingest.add(scan, self.encoder, remove_missing=remove_missing, progress=progress, cancel=cancel,
                                ray=ray)

    def indexed_roots(self) -> list[str]:
        """Folders that were ever given to an unconfined :meth:`add_paths` (the default allowed roots of the tools)."""
        return self._ingest.indexed_roots()

    def add_vectors(self, vectors: np.ndarray, paths: Sequence[str], *, metadata: Sequence[dict] | None = None) -> list[int]:
        """Add precomputed embeddings with their paths (embeddings made elsewhere, benchmarks).

        Rows are L2-normalised here. ``metadata`` items may carry sha256, size, width, height,
        format, mtime, description, tags and the PhotoMeta keys (taken_at, camera_make, gps_lat, ...).
        A path already indexed is replaced.
        """
        self._writable()
        return self._ingest.add_vectors(vectors, paths, dim=self.dim, metadata=metadata)

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str | Path] = (), *, dry_run: bool = False,
               exclude: bool = True) -> RemoveReport:
        """Remove images by id or path (a folder path removes everything indexed under it).

        Removal is logical and immediate: the next search no longer returns them. The vectors
        leave the main index at the next rebuild. With ``dry_run`` the report lists what would be
        removed and nothing changes (it works on a read-only store too). With ``exclude`` (a removal by
        request) a later folder walk leaves the removed files out; without it (files that vanished) not.
        """
        if not dry_run:
            self._writable()
        return self._ingest.remove(ids, paths, dry_run=dry_run, exclude=exclude)

    # -- maintenance --------------------------------------------------------------------------
    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        """Append the buffer to the main index without retraining (the first merge builds it)."""
        self._writable()
        return self._maintenance.merge(progress)

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None,
                cancel: threading.Event | None = None) -> MaintenanceReport:
        """Retrain a new main index on the live vectors only; the one physical delete (ids stay). ``cancel``
        stops it before the new index replaces the old one."""
        self._writable()
        return self._maintenance.rebuild(progress, index_string, cancel)

    def check_index_string(self, index_string: str | None) -> None:
        """Raise InvalidInputError unless :meth:`rebuild` can use ``index_string``; builds and allocates nothing."""
        self._maintenance.check_index_string(index_string)

    def checkpoint(self) -> bool:
        """Write merges not yet in the index file (done by merges now and then, and on close)."""
        self._writable()
        return self._maintenance.checkpoint()

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait until a background compaction or retrain started by a merge has finished."""
        self._maintenance.wait_for_background(timeout)

    def maintenance_advice(self) -> tuple[bool, bool, list[str]]:
        """(merge advised, rebuild advised, human-readable hints)."""
        return self._maintenance.advice()

    def maintain(self, progress: ProgressCallback | None = None) -> list[MaintenanceReport]:
        """Merge and rebuild if advised (what ``img-agent index`` runs after adding)."""
        self._writable()
        return self._maintenance.maintain(progress)

    @property
    def live_count(self) -> int:
        """Searchable images now (cheap: read from the current view)."""
        return self._state.view.n_live

    def status(self) -> IndexStatus:
        return self._maintenance.status(model=self.model, pretrained=self.pretrained, dim=self.dim)

    @property
    def main_index(self) -> Any | None:
        """The current main faiss index (None before the first merge). Searches share it: read only."""
        return self._state.view.main

    vector_store = property(lambda self: self._state.external.uri if self._state.external else "faiss",
                            doc="Where the vectors are searched: 'faiss' or the Milvus URI.")

    def main_index_bytes(self) -> int:
        """Serialized size of the current main index (about its memory), 0 when there is none."""
        main = self._state.view.main
        return faiss_plan.index_bytes(main) if main is not None else 0

    # -- searching ----------------------------------------------------------------------------
    def search_text(self, query: str, k: int | None = None, filter: SearchFilter | None = None,
                    collapse: bool | float = False) -> list[SearchHit]:
        """Images matching a text; ``collapse`` (True or a threshold): k different pictures (see collapse.py)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("The text query is empty; describe what the images should show.")
        k = check_k(k, self.settings.topk)
        vec = self.encode_text([query])  # before the empty check: a missing model is reported even then
        if self._empty():
            return []
        return ranked_hits(self._state, self._searcher, self._queries(vec), k, filter, collapse)

    def search_image(self, image: Path | str | bytes, k: int | None = None, filter: SearchFilter | None = None,
                     collapse: bool | float = False) -> list[SearchHit]:
        k = check_k(k, self.settings.topk)
        vec = self.encode_image(image)
        if self._empty():
            return []
        return ranked_hits(self._state, self._searcher, self._queries(vec[None, :]), k, filter, collapse)

    def search_similar(self, image_id: int, k: int | None = None, filter: SearchFilter | None = None,
                       collapse: bool | float = False) -> list[SearchHit]:
        """Images most like an indexed one ("more like this"), excluding itself."""
        k = check_k(k, self.settings.topk)
        live = self._state.view.live
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or not (0 <= image_id < len(live)) or not live[image_id]:
            raise NotFoundError(f"No live image has id {image_id}. Use an id from search results.")
        vec = self.store.get(np.array([image_id]))
        return ranked_hits(self._state, self._searcher, vec, k, filter, collapse, exclude=int(image_id))

    def collapse_hits(self, hits: Sequence[SearchHit], k: int | None = None, threshold: float | None = None) -> list[SearchHit]:
        """Fold near-duplicates within a ranked hit list made elsewhere (:mod:`~img_agent.index.collapse`)."""
        return collapse_hit_list(self._state, hits, check_k(k, len(hits) or 1), threshold)

    def find_duplicates(self, threshold: float | None = None, folder: str | Path | None = None,
                        progress: ProgressCallback | None = None,
                        cancel: threading.Event | None = None) -> DuplicatesReport:
        """Groups of live images (under ``folder``) with cosine >= ``threshold`` (:mod:`~img_agent.index.duplicates`)."""
        return find_duplicates(self._state, threshold, folder, progress=progress, cancel=cancel)

    def search_terms(self, terms: Sequence[Term], k: int | None = None, filter: SearchFilter | None = None,
                     exclude_ids: Collection[int] = (), collapse: bool | float = False) -> list[SearchHit]:
        """Search with the normalised weighted sum of the terms' unit vectors (:mod:`~img_agent.index.terms`);
        images of positive ``image_id`` terms and ``exclude_ids`` are left out."""
        k = check_k(k, self.settings.topk)
        return search_terms(self._state, self._searcher, terms, k, filter, exclude_ids, collapse=collapse,
                            encode_text=self.encode_text, encode_image=self.encode_image)

    def search_vectors(self, queries: np.ndarray, k: int | None = None, filter: SearchFilter | None = None) -> list[list[SearchHit]]:
        """Search with query embeddings (nq, dim); each row is normalised first."""
        k = check_k(k, self.settings.topk)
        return self._searcher.hits(self._queries(queries), k, filter)

    def search_ids(self, queries: np.ndarray, k: int | None = None, filter: SearchFilter | None = None) -> Ranked:
        """The index part of :meth:`search_vectors`: per query, (ids, cosine scores) best first, no records."""
        k = check_k(k, self.settings.topk)
        return self._searcher.ids(self._queries(queries), k, filter)

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if self.dim is not None and (q.ndim != 2 or q.shape[1] != self.dim):
            raise InvalidInputError(f"query vectors must have shape (n, {self.dim}); got {q.shape}.")
        return normalise(q, "query vector")

    def _empty(self) -> bool:
        return self._state.view.n_live == 0

    # -- records ------------------------------------------------------------------------------
    def get(self, ids: Sequence[int]) -> list[ImageRecord]:
        """Catalog records of live images, in the order asked."""
        found = self.catalog.records(ids)
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"No live image has id {', '.join(missing)}. Use ids from search results.")
        return [found[i] for i in ids]

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        """A JPEG thumbnail of an indexed image, read from its file."""
        from img_agent.embed.decode import make_thumbnail
        from img_agent.embed.images import read_image_file

        rec = self.catalog.record(image_id)
        path = Path(rec.path)
        if not path.is_file():
            raise NotFoundError(
                f"Image {image_id} was indexed from {path}, which no longer exists. Re-index its folder with "
                "'img-agent index --prune' or remove it."
            )
        img = read_image_file(path, max_bytes=self.settings.max_file_bytes, max_pixels=self.settings.max_image_pixels,
                              draft_size=max_side)
        return make_thumbnail(img.image, max_side=max_side, quality=quality)
