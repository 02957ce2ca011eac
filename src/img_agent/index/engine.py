"""The engine: the one facade over encoder, catalog, vector store and Faiss index.

Double-buffer design (after the seed, done durably and thread-safely):

- a trained **main index** (one file per generation, ``index/gen-000042.faiss``),
- an exact in-memory **buffer** of recently added vectors (rebuilt from the catalog at open),
- a **deleted** set, excluded inside every search by a bitmap selector over the dense id space.

Writers (add, remove) are serialised by one lock and publish a new immutable :class:`_View`;
searches read the current view without locking, so they never wait for a merge or rebuild, which
build their new index off to the side and swap it in under the lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from img_agent.config import MAX_TOPK, Settings
from img_agent.errors import (
    BusyError,
    ImageDecodeError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from img_agent.index import faiss_plan
from img_agent.index.catalog import Catalog, NewImage, check_integrity
from img_agent.results import (
    AddReport,
    ImageRecord,
    IndexStatus,
    MaintenanceReport,
    ProgressCallback,
    RemoveReport,
    SearchFilter,
    SearchHit,
    SkippedItem,
)
from img_agent.index.vectors import VectorStore

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder

log = logging.getLogger(__name__)

EXACT_SUBSET_MAX = 20_000  # filtered searches over at most this many images are done exactly
MIN_RERANK_CANDIDATES = 100
REBUILD_DELETED_FRACTION = 0.2
# A merge writes the main index file only once this many merged vectors are not in it yet (the
# catalog and vector store already hold them durably; opening re-adds them): merges stay cheap.
CHECKPOINT_MIN_ROWS = 20_000
CHECKPOINT_FRACTION = 0.05
_EMPTY_IDS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class _View:
    """An immutable snapshot of everything a search needs. Replaced, never mutated."""

    main: Any | None
    plan: faiss_plan.IndexPlan | None
    generation: int
    live: np.ndarray  # bool[next_id]: searchable
    buffer_ids: np.ndarray  # int64, ascending
    buffer_vecs: np.ndarray  # float32 (len(buffer_ids), dim)
    unsaved: int = 0  # vectors in ``main`` that its generation file does not hold yet
    bitmap: np.ndarray = field(init=False)  # packed ``live`` for the faiss selector
    n_live: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bitmap", np.packbits(self.live, bitorder="little"))
        object.__setattr__(self, "n_live", int(np.count_nonzero(self.live)))

    def with_buffer(self, keep: np.ndarray, add_ids: np.ndarray = _EMPTY_IDS, add_vecs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        ids = self.buffer_ids[keep]
        vecs = self.buffer_vecs[keep]
        if len(add_ids):
            ids = np.concatenate([ids, add_ids])
            vecs = np.concatenate([vecs, add_vecs]) if len(vecs) else np.asarray(add_vecs, dtype=np.float32)
        return ids, vecs


class _DirLock:
    """An exclusive lock on the data directory for the life of the engine (one writer process)."""

    def __init__(self, folder: Path):
        self.path = folder / "lock"
        self._fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, single-process use is on the user
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise StoreError(
                f"The data directory {folder} is in use by another img-agent process (pid {holder}). Stop that "
                "process (e.g. the MCP server) or point --data-dir / IMG_AGENT_DATA_DIR at another folder."
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class Engine:
    """Index, search and maintain one image collection. Thread-safe; one per data directory."""

    def __init__(self, settings: Settings, catalog: Catalog, store: VectorStore, lock: _DirLock,
                 model: str, pretrained: str, encoder: ClipEncoder | None):
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.model = model
        self.pretrained = pretrained
        self._dirlock = lock
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._maint_lock = threading.Lock()
        self._claims_lock = threading.Lock()
        self.data_dir = settings.data_dir
        self.index_dir = settings.data_dir / "index"
        self._view = self._load_view()

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, encoder: ClipEncoder | None = None) -> Engine:
        """Open (or create) the store in ``settings.data_dir``. The model loads on first need."""
        data_dir = settings.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "index").mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the data directory {data_dir} ({exc}). Choose another with --data-dir.") from exc
        lock = _DirLock(data_dir)
        try:
            catalog = Catalog(data_dir / "catalog.sqlite")
            meta = catalog.meta()
            model, pretrained = _resolve_model(settings, meta, encoder)
            catalog.bind_model(model, pretrained, encoder.dim if encoder is not None else None)
            dim = catalog.meta().get("dim")
            store = VectorStore(data_dir, committed_rows=catalog.next_id(), dim=int(dim) if dim else None)
            check_integrity(catalog, store.rows)
            return cls(settings, catalog, store, lock, model, pretrained, encoder)
        except BaseException:
            lock.release()
            raise

    def _gen_path(self, generation: int) -> Path:
        return self.index_dir / f"gen-{generation:06d}.faiss"

    def _load_view(self) -> _View:
        meta = self.catalog.meta()
        generation = int(meta.get("main_generation", 0))
        states = self.catalog.state_arrays()
        main, plan = None, None
        if generation:
            path = self._gen_path(generation)
            in_file = len(states.main_ids) + len(states.tombstone_ids) - len(states.unsaved_ids)
            try:
                main = faiss_plan.read_index(path)
                if main.ntotal != in_file:
                    raise ValueError(f"it holds {main.ntotal} vectors, the catalog expects {in_file}")
                plan = faiss_plan.plan_of(meta["main_factory"], self.dim, self.settings.nprobe)
            except Exception as exc:  # noqa: BLE001 - any unreadable index is recovered from the vector store
                log.warning(
                    "Main index %s is unusable (%s); its images go back to the exact buffer. "
                    "Run 'img-agent rebuild' to build a new index from the stored vectors.", path, exc,
                )
                self.catalog.reset_main()
                states = self.catalog.state_arrays()
                main, plan, generation = None, None, 0
            else:
                # merged since the last checkpoint: re-add from the vector store (no retraining)
                unsaved = states.unsaved_ids
                for start in range(0, len(unsaved), faiss_plan.ADD_CHUNK):
                    chunk = unsaved[start : start + faiss_plan.ADD_CHUNK]
                    main.add_with_ids(self.store.get(chunk), chunk)
        self._remove_stale_generations(generation)
        live = np.zeros(states.next_id, dtype=bool)
        live[states.buffer_ids] = True
        live[states.main_ids] = True
        vecs = self.store.get(states.buffer_ids) if len(states.buffer_ids) else np.empty((0, self.dim or 0), np.float32)
        unsaved = len(states.unsaved_ids) if main is not None else 0
        return _View(main, plan, generation, live, states.buffer_ids, vecs, unsaved)

    def _remove_stale_generations(self, current: int) -> None:
        keep = self._gen_path(current).name if current else None
        for path in self.index_dir.glob("gen-*"):
            if path.name != keep:
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("Could not remove stale index file %s: %s", path, exc)

    def close(self) -> None:
        """Checkpoint pending merges (so the next open is quick) and release the store."""
        try:
            self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - merges stay recorded in the catalog; reopening re-adds them
            log.warning("could not write the main index on close (%s); it is rebuilt from vectors at next open", exc)
        self.catalog.close()
        self._dirlock.release()

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
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    from img_agent.embed.encoder import get_encoder

                    encoder = get_encoder(self.model, self.pretrained, self.settings.device)
                    self.catalog.bind_model(self.model, self.pretrained, encoder.dim)
                    if self.store.dim is not None and self.store.dim != encoder.dim:
                        raise StoreError(
                            f"Model {self.model} gives {encoder.dim}-d vectors but the store holds {self.store.dim}-d. "
                            "Use another --data-dir for this model."
                        )
                    self._encoder = encoder
        return self._encoder

    def warm_up(self) -> None:
        """Load the model now (servers call this in a background thread)."""
        _ = self.encoder

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_text(list(texts))

    def encode_image(self, image: Path | str | bytes) -> np.ndarray:
        """Embedding of one image given as a file path or encoded bytes."""
        from img_agent.embed.images import decode_image_bytes, read_image_file

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

    # -- adding -------------------------------------------------------------------------------
    def add_paths(
        self,
        paths: Iterable[str | Path],
        *,
        recursive: bool = True,
        remove_missing: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> AddReport:
        """Index image files and folders. New or changed files are encoded; the rest is reported.

        Each encoded batch is durable and searchable as soon as it is committed. With
        ``remove_missing``, images indexed under the given folders whose files are gone are removed.
        """
        from img_agent.embed.images import iter_image_files

        paths = [Path(p).expanduser() for p in paths]
        report = AddReport()
        todo: list[Path] = []
        seen: set[str] = set()
        for item in iter_image_files(paths, recursive=recursive):
            if isinstance(item, SkippedItem):
                report.skipped.append(item)
                continue
            seen.add(str(item))
            known = self.catalog.live_by_path(str(item))
            if known is not None:
                try:
                    st = item.stat()
                except OSError as exc:
                    report.skipped.append(SkippedItem(path=str(item), reason=f"cannot read file: {exc.strerror or exc}"))
                    continue
                if known.size == st.st_size and known.mtime == st.st_mtime:
                    report.unchanged += 1
                    continue
            todo.append(item)
        self._remember_roots(paths)

        encoder = self.encoder
        dup_of: dict[str, str] = {}
        self_dup: dict[str, tuple[int, float]] = {}
        inflight: dict[str, str] = {}

        def known_hash(path: Path, sha: str) -> bool:
            with self._claims_lock:
                row = self.catalog.live_by_sha(sha)
                if row is not None:
                    if row.path == str(path):
                        self_dup[str(path)] = (row.id, path.stat().st_mtime)
                    else:
                        dup_of[str(path)] = f"duplicate of id {row.id} ({row.path})"
                    return True
                if sha in inflight:
                    dup_of[str(path)] = f"duplicate of {inflight[sha]} (same content in this batch)"
                    return True
                inflight[sha] = str(path)
                return False

        def load(path: Path):
            from img_agent.embed.images import read_image_file

            img = read_image_file(
                path,
                max_bytes=self.settings.max_file_bytes,
                max_pixels=self.settings.max_image_pixels,
                draft_size=encoder.image_size,
                known_hash=lambda sha: known_hash(path, sha),
            )
            # the payload is the catalog row to be (id assigned at commit); it must not hold the pixels
            return NewImage(0, str(path), img.sha256, img.size, img.width, img.height, img.format, img.mtime), img.image

        stream = encoder.encode_stream(
            todo, load, batch_size=self.settings.batch_size, workers=self.settings.workers,
            progress=progress, cancel=cancel,
        )
        for loaded, vecs, skips in stream:
            for skip in skips:
                if skip.path in self_dup:
                    image_id, mtime = self_dup.pop(skip.path)
                    self.catalog.touch(image_id, mtime)
                    report.unchanged += 1
                elif skip.path in dup_of:
                    report.skipped.append(SkippedItem(path=skip.path, reason=dup_of.pop(skip.path)))
                else:
                    report.skipped.append(skip)
            if loaded:
                ids, replaced = self._commit_images(loaded, vecs)
                report.added += ids
                report.added_paths += [x.path for x in loaded]
                report.replaced += replaced
                if self._maybe_auto_merge():
                    report.merged = True
        report.cancelled = bool(cancel is not None and cancel.is_set())
        if remove_missing and not report.cancelled:
            report.removed_missing = self._remove_missing([p for p in paths if p.is_dir()], seen)
        return report

    def _remember_roots(self, paths: list[Path]) -> None:
        roots = set(self.indexed_roots())
        new = {str(p.resolve()) for p in paths if p.is_dir()} - roots
        if new:
            self.catalog.set_meta(indexed_roots=json.dumps(sorted(roots | new)))

    def indexed_roots(self) -> list[str]:
        """Folders that were ever given to add_paths (the default allowed roots of the tools)."""
        return json.loads(self.catalog.meta().get("indexed_roots", "[]"))

    def _remove_missing(self, folders: list[Path], seen: set[str]) -> list[int]:
        gone = []
        for folder in folders:
            for image_id, path in self.catalog.live_paths_under(str(folder.resolve())):
                if path not in seen and not os.path.exists(path):
                    gone.append(image_id)
        return self.remove(ids=gone).removed if gone else []

    def _commit_images(self, rows: list[NewImage], vecs: np.ndarray) -> tuple[list[int], list[int]]:
        """Durably append vectors and commit their rows (the acknowledgement), then publish."""
        with self._write_lock:
            replaced = list(self.catalog.ids_for_paths([r.path for r in rows]).values())
            return self._append(vecs, rows, replaced), replaced

    def add_vectors(
        self,
        vectors: np.ndarray,
        paths: Sequence[str],
        *,
        metadata: Sequence[dict] | None = None,
    ) -> list[int]:
        """Add precomputed embeddings with their paths (embeddings made elsewhere, benchmarks).

        Rows are L2-normalised here. ``metadata`` items may carry sha256, size, width, height,
        format, mtime, description and tags. A path already indexed is replaced.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(paths):
            raise InvalidInputError(
                f"vectors must be a 2-d array with one row per path; got shape {vectors.shape} for {len(paths)} paths."
            )
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise InvalidInputError(f"vectors are {vectors.shape[1]}-d but this store holds {self.dim}-d embeddings.")
        if metadata is not None and len(metadata) != len(paths):
            raise InvalidInputError("metadata must have one entry per path.")
        if not len(vectors):
            return []
        vectors = _normalise(vectors, "vectors")
        rows = []
        for i, path in enumerate(paths):
            m = dict(metadata[i]) if metadata is not None else {}
            rows.append(NewImage(
                0, str(path), str(m.get("sha256", "")), int(m.get("size", 0)), int(m.get("width", 0)),
                int(m.get("height", 0)), str(m.get("format", "")), float(m.get("mtime", 0.0)),
                m.get("description"), tuple(m.get("tags", ())),
            ))
        if len({r.path for r in rows}) != len(rows):
            raise InvalidInputError("paths must be unique within one add_vectors call.")
        with self._write_lock:
            found = self.catalog.ids_for_paths([r.path for r in rows]) if self.catalog.next_id() else {}
            ids = self._append(vectors, rows, list(found.values()))
        self._maybe_auto_merge()
        return ids

    def _append(self, vecs: np.ndarray, rows: list[NewImage], replaced: list[int]) -> list[int]:
        """Append + commit + publish; caller holds the write lock."""
        start = self.store.append(vecs)
        if self.catalog.meta().get("dim") is None:
            self.catalog.set_meta(dim=self.store.dim)
        ids = np.arange(start, start + len(rows), dtype=np.int64)
        try:
            self.catalog.insert([replace(r, id=int(i)) for r, i in zip(rows, ids)], replaced=replaced)
        except BaseException:
            self.store.rollback(start)
            raise
        view = self._view
        live = np.zeros(start + len(rows), dtype=bool)
        live[: len(view.live)] = view.live
        live[ids] = True
        if replaced:
            live[np.asarray(replaced, dtype=np.int64)] = False
        keep = live[view.buffer_ids]
        buf_ids, buf_vecs = view.with_buffer(keep, ids, np.asarray(vecs, dtype=np.float32))
        self._view = replace(view, live=live, buffer_ids=buf_ids, buffer_vecs=buf_vecs)
        return ids.tolist()

    # -- removing -----------------------------------------------------------------------------
    def remove(self, ids: Sequence[int] = (), paths: Sequence[str | Path] = ()) -> RemoveReport:
        """Remove images by id or path (a folder path removes everything indexed under it).

        Removal is logical and immediate: the next search no longer returns them. The vectors
        leave the main index at the next rebuild.
        """
        report = RemoveReport()
        by_id: set[int] = set()
        for raw in ids:
            if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
                raise InvalidInputError(f"Image ids are integers; got {raw!r}.")
            by_id.add(int(raw))
        wanted = set(by_id)
        for raw in paths:
            path = str(Path(raw).expanduser().resolve())
            row = self.catalog.live_by_path(path)
            under = [row.id] if row is not None else [i for i, _ in self.catalog.live_paths_under(path)]
            if under:
                wanted.update(under)
            else:
                report.not_found.append(str(raw))
        with self._write_lock:
            removed = self.catalog.mark_deleted(sorted(wanted))
            if removed:
                view = self._view
                live = view.live.copy()
                live[np.asarray(removed, dtype=np.int64)] = False
                buf_ids, buf_vecs = view.with_buffer(live[view.buffer_ids])
                self._view = replace(view, live=live, buffer_ids=buf_ids, buffer_vecs=buf_vecs)
        report.removed = removed
        report.not_found = [str(i) for i in sorted(by_id - set(removed))] + report.not_found
        if not removed and (ids or paths):
            raise NotFoundError(
                f"No live image matched {', '.join(report.not_found)}. Use ids from search results or "
                "'img-agent status', or indexed file paths."
            )
        return report

    # -- maintenance --------------------------------------------------------------------------
    def _maybe_auto_merge(self) -> bool:
        if len(self._view.buffer_ids) < self.settings.merge_threshold:
            return False
        if not self._maint_lock.acquire(blocking=False):
            return False  # a merge or rebuild is running; the buffer keeps serving exactly
        try:
            self._merge_locked(None)
            return True
        finally:
            self._maint_lock.release()

    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        """Append the buffer to the main index without retraining (the first merge builds it)."""
        if not self._maint_lock.acquire(timeout=0.1):
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
            return self._merge_locked(progress)
        finally:
            self._maint_lock.release()

    def _merge_locked(self, progress: ProgressCallback | None) -> MaintenanceReport:
        import faiss

        t0 = time.perf_counter()
        view = self._view
        ids, vecs = view.buffer_ids, view.buffer_vecs
        if not len(ids):
            return self._report("merge", 0, 0, view, t0, retrained=False)
        if view.main is None:
            plan = faiss_plan.plan_for(len(ids), self.dim, self.settings.index_string, self.settings.nprobe)
            index = faiss_plan.build(plan, self.dim, ids, self.store.get, progress)
            retrained = plan.trained
        else:
            plan = view.plan
            index = faiss.clone_index(view.main)
            for start in range(0, len(ids), faiss_plan.ADD_CHUNK):
                index.add_with_ids(vecs[start : start + faiss_plan.ADD_CHUNK], ids[start : start + faiss_plan.ADD_CHUNK])
                if progress:
                    progress(min(len(ids), start + faiss_plan.ADD_CHUNK), len(ids), "merging buffer")
            retrained = False
        unsaved = view.unsaved + len(ids)
        save = view.main is None or unsaved >= max(CHECKPOINT_MIN_ROWS, CHECKPOINT_FRACTION * index.ntotal)
        self._publish(index, plan, view.generation + 1 if save else view.generation, ids, rebuild=False,
                      save=save, last_merge=time.time())
        return self._report("merge", len(ids), 0, self._view, t0, retrained=retrained, saved=save)

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None) -> MaintenanceReport:
        """Retrain a new main index on the live vectors only; the one physical delete.

        Ids stay the same. Searches, adds and removes go on meanwhile: adds stay in the buffer,
        removals made during the rebuild are filtered out as usual.
        """
        if not self._maint_lock.acquire(timeout=0.1):
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        try:
            t0 = time.perf_counter()
            view = self._view
            live_ids = np.flatnonzero(view.live).astype(np.int64)
            dropped = (view.main.ntotal if view.main is not None else 0) + len(view.buffer_ids) - len(live_ids)
            if not len(live_ids):
                # nothing left: no main index at all (generation 0), every stale file removed
                self._publish(None, None, 0, live_ids, rebuild=True, save=True, last_rebuild=time.time())
                return self._report("rebuild", 0, dropped, self._view, t0, retrained=False, saved=True)
            plan = faiss_plan.plan_for(len(live_ids), self.dim, index_string or self.settings.index_string, self.settings.nprobe)
            index = faiss_plan.build(plan, self.dim, live_ids, self.store.get, progress)
            self._publish(index, plan, view.generation + 1, live_ids, rebuild=True, save=True, last_rebuild=time.time())
            return self._report("rebuild", len(live_ids), dropped, self._view, t0, retrained=plan.trained, saved=True)
        finally:
            self._maint_lock.release()

    def _publish(self, index, plan: faiss_plan.IndexPlan | None, generation: int, ids: np.ndarray, *, rebuild: bool,
                 save: bool, **meta: object) -> None:
        """Switch to a new main index holding ``ids`` (exactly, for a rebuild; in addition, for a merge).

        With ``save`` the index is first written as file ``generation``; the catalog switches to it
        in the same transaction that records its content, so a crash leaves the old or the new state.
        Without it (a merge between checkpoints) only the catalog records the merge; opening re-adds
        those vectors from the vector store.
        """
        if save and index is not None:
            faiss_plan.write_index(index, self._gen_path(generation))
        with self._write_lock:
            self.catalog.commit_generation(
                ids, generation=generation, rebuild=rebuild, persisted=save,
                main_factory=plan.factory if plan else "", **meta,
            )
            view = self._view
            keep = ~np.isin(view.buffer_ids, ids, assume_unique=True)
            buf_ids, buf_vecs = view.with_buffer(keep)
            unsaved = 0 if save or index is None else view.unsaved + len(ids)
            self._view = replace(view, main=index, plan=plan, generation=generation, buffer_ids=buf_ids,
                                 buffer_vecs=buf_vecs, unsaved=unsaved)
        if save:
            self._remove_stale_generations(generation)

    def checkpoint(self) -> bool:
        """Write merges not yet in the index file (done by merges now and then, and on close)."""
        if not self._maint_lock.acquire(timeout=0.1):
            return False
        try:
            view = self._view
            if view.main is None or not view.unsaved:
                return False
            self._publish(view.main, view.plan, view.generation + 1, _EMPTY_IDS, rebuild=False, save=True)
            return True
        finally:
            self._maint_lock.release()

    def _report(self, op: str, moved: int, dropped: int, view: _View, t0: float, *, retrained: bool,
                saved: bool = False) -> MaintenanceReport:
        return MaintenanceReport(
            operation=op, moved=moved, dropped=max(0, dropped), generation=view.generation,
            index=view.plan.factory if view.plan else "none", seconds=round(time.perf_counter() - t0, 4),
            retrained=retrained, saved=saved,
        )

    def maintenance_advice(self) -> tuple[bool, bool, list[str]]:
        """(merge advised, rebuild advised, human-readable hints)."""
        view = self._view
        hints: list[str] = []
        n_live = view.n_live
        merge = len(view.buffer_ids) >= self.settings.merge_threshold
        if merge:
            hints.append(f"merge advised: {len(view.buffer_ids):,} images wait in the exact buffer (threshold "
                         f"{self.settings.merge_threshold:,}); run 'img-agent merge'.")
        rebuild = False
        if view.main is not None:
            tomb = view.main.ntotal - (n_live - len(view.buffer_ids))
            if tomb > REBUILD_DELETED_FRACTION * max(1, view.main.ntotal):
                rebuild = True
                hints.append(f"rebuild advised: {tomb:,} removed images still occupy the main index "
                             f"({tomb / view.main.ntotal:.0%}); run 'img-agent rebuild' to drop them.")
        if self.dim and n_live:
            want = faiss_plan.plan_for(n_live, self.dim, self.settings.index_string, self.settings.nprobe)
            have = view.plan.factory if view.plan else None
            if want.note:
                hints.append(want.note)
            if have is not None and have != want.factory and _outgrown(have, want, n_live):
                rebuild = True
                hints.append(f"rebuild advised: {n_live:,} images would be served better by {want.factory} "
                             f"than by the current {have}; run 'img-agent rebuild'.")
        return merge, rebuild, hints

    def maintain(self, progress: ProgressCallback | None = None) -> list[MaintenanceReport]:
        """Merge and rebuild if advised (what ``img-agent index`` runs after adding)."""
        done = []
        merge, rebuild, _ = self.maintenance_advice()
        if rebuild:
            done.append(self.rebuild(progress))
        elif merge:
            done.append(self.merge(progress))
        return done

    def status(self) -> IndexStatus:
        view = self._view
        n_live = view.n_live
        n_buf = len(view.buffer_ids)
        meta = self.catalog.meta()
        _, _, hints = self.maintenance_advice()
        plan = view.plan
        return IndexStatus(
            live=n_live,
            main=n_live - n_buf,
            buffer=n_buf,
            deleted=(view.main.ntotal - (n_live - n_buf)) if view.main is not None else 0,
            index=plan.factory if plan else ("none (exact buffer only)" if n_buf else "none"),
            index_string=self.settings.index_string,
            trained=bool(plan and plan.trained),
            nlist=plan.nlist if plan else None,
            nprobe=plan.nprobe if plan else None,
            rerank_candidates=max(10 * self.settings.rerank, MIN_RERANK_CANDIDATES) if plan and not plan.exact_scores else None,
            model=self.model,
            pretrained=self.pretrained,
            dim=self.dim or 0,
            generation=view.generation,
            unsaved=view.unsaved,
            bytes_on_disk=sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file()),
            data_dir=str(self.data_dir),
            merge_threshold=self.settings.merge_threshold,
            last_merge=float(meta["last_merge"]) if "last_merge" in meta else None,
            last_rebuild=float(meta["last_rebuild"]) if "last_rebuild" in meta else None,
            hints=hints,
        )

    # -- searching ----------------------------------------------------------------------------
    def search_text(self, query: str, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("The text query is empty; describe what the images should show.")
        k = self._check_k(k)
        vec = self.encode_text([query])  # before the empty check: a missing model is reported even then
        if self._empty():
            return []
        return self.search_vectors(vec, k, filter)[0]

    def search_image(self, image: Path | str | bytes, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        k = self._check_k(k)
        vec = self.encode_image(image)
        if self._empty():
            return []
        return self.search_vectors(vec[None, :], k, filter)[0]

    def search_similar(self, image_id: int, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        """Images most like an indexed one ("more like this"), excluding itself."""
        k = self._check_k(k)
        view = self._view
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or not (0 <= image_id < len(view.live)) or not view.live[image_id]:
            raise NotFoundError(f"No live image has id {image_id}. Use an id from search results.")
        vec = self.store.get(np.array([image_id]))
        return self._search(vec, k, filter, exclude=int(image_id))[0]

    def search_vectors(self, queries: np.ndarray, k: int | None = None, filter: SearchFilter | None = None) -> list[list[SearchHit]]:
        """Search with query embeddings (nq, dim); each row is normalised first."""
        k = self._check_k(k)
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if self.dim is not None and (q.ndim != 2 or q.shape[1] != self.dim):
            raise InvalidInputError(f"query vectors must have shape (n, {self.dim}); got {q.shape}.")
        return self._search(_normalise(q, "query vector"), k, filter)

    def _check_k(self, k: int | None) -> int:
        if k is None:
            return self.settings.topk
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_TOPK:
            raise InvalidInputError(f"k must be an integer from 1 to {MAX_TOPK}; got {k!r}.")
        return int(k)

    def _empty(self) -> bool:
        return self._view.n_live == 0

    def _search(self, q: np.ndarray, k: int, filter: SearchFilter | None, exclude: int | None = None) -> list[list[SearchHit]]:
        view = self._view
        mask = None
        if filter is not None and filter.active:
            ids = self.catalog.filtered_ids(filter.path_prefix, filter.path_glob)
            mask = np.zeros_like(view.live)
            mask[ids[ids < len(mask)]] = True
            mask &= view.live
        if exclude is not None:
            mask = view.live.copy() if mask is None else mask
            mask[exclude] = False
        ranked = self._search_view(view, q, k, mask)
        # Results are those of the view's moment: an image removed since then keeps its record here.
        records = self.catalog.records(np.unique(np.concatenate([r[0] for r in ranked])), include_deleted=True)
        out = []
        for ids, scores in ranked:
            hits = []
            for image_id, score in zip(ids.tolist(), scores.tolist()):
                rec = records.get(image_id)
                if rec is not None:
                    hits.append(SearchHit(**rec.model_dump(), rank=len(hits) + 1, score=round(float(score), 6)))
            out.append(hits)
        return out

    def _search_view(self, view: _View, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k (ids, cosine scores) per query over main + buffer, honouring ``mask``."""
        allowed = view.live if mask is None else mask
        n_allowed = view.n_live if mask is None else int(np.count_nonzero(mask))
        if n_allowed == 0:
            return [(_EMPTY_IDS, np.empty(0, np.float32)) for _ in q]
        if mask is not None and n_allowed <= EXACT_SUBSET_MAX:
            return self._exact(q, np.flatnonzero(allowed), k)
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in q]
        main_hits = 0
        if view.main is not None and view.main.ntotal:
            bitmap = view.bitmap if mask is None else np.packbits(mask, bitorder="little")
            found = self._search_main(view, q, k, bitmap)
            for i, pair in enumerate(found):
                parts[i].append(pair)
            main_hits = min(len(p[0]) for p in found)
        if len(view.buffer_ids):
            scores = view.buffer_vecs @ q.T  # (nb, nq)
            ok = allowed[view.buffer_ids]
            for i in range(len(q)):
                parts[i].append(_topk(view.buffer_ids[ok], scores[ok, i], k))
        out = [_topk(np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]), k) for ps in parts]
        expected = min(k, n_allowed)
        if any(len(ids) < expected for ids, _ in out) and view.plan is not None and not view.plan.factory == "Flat":
            # The probed lists held too few allowed vectors (heavy deletion or a narrow filter):
            # answer exactly so k live results come back whenever k exist.
            log.debug("approximate search returned %d < %d; falling back to exact", main_hits, expected)
            return self._exact(q, np.flatnonzero(allowed), k)
        return out

    def _search_main(self, view: _View, q: np.ndarray, k: int, bitmap: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        import faiss

        plan = view.plan
        selector = faiss_plan.bitmap_selector(bitmap)
        params = faiss_plan.search_params(plan, selector)
        kk = k if plan.exact_scores else max(k * self.settings.rerank, MIN_RERANK_CANDIDATES)
        kk = min(kk, view.main.ntotal)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1 if len(q) <= 4 else os.cpu_count() or 1)
        try:
            dist, labels = view.main.search(q, kk, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        del selector  # the bitmap had to outlive the search
        out = []
        for i in range(len(q)):
            ok = labels[i] >= 0
            ids = labels[i][ok]
            if plan.exact_scores:
                out.append((ids, dist[i][ok]))
            else:
                exact = self.store.get(ids) @ q[i]
                out.append(_topk(ids, exact, k))
        return out

    def _exact(self, q: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Brute force over the given ids, read from the vector store in chunks."""
        best: list[tuple[np.ndarray, np.ndarray]] = [(_EMPTY_IDS, np.empty(0, np.float32)) for _ in q]
        for start in range(0, len(ids), 65_536):
            chunk = ids[start : start + 65_536]
            scores = self.store.get(chunk) @ q.T
            for i in range(len(q)):
                cand = _topk(chunk, scores[:, i], k)
                best[i] = _topk(np.concatenate([best[i][0], cand[0]]), np.concatenate([best[i][1], cand[1]]), k)
        return best

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
        from img_agent.embed.images import make_thumbnail, read_image_file

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


def _topk(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k by score (descending), ties broken by smaller id, deterministic."""
    if len(ids) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # keep every id tied with the k-th score so tie-breaking by id is exact
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].astype(np.int64), scores[order].astype(np.float32)


def _normalise(x: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{what} contains NaN or infinite values.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInputError(f"{what} contains an all-zero row, which has no direction.")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _outgrown(have: str, want: faiss_plan.IndexPlan, n_live: int) -> bool:
    """Whether the current index type no longer fits the collection (worth a retrain)."""
    if have == "Flat" or want.factory == "Flat":
        return True
    import re

    m = re.search(r"IVF(\d+)", have)
    if m and want.nlist:
        ratio = want.nlist / int(m.group(1))
        return ratio >= 4 or ratio <= 0.25
    return have.split(",")[-1] != want.factory.split(",")[-1]


def _resolve_model(settings: Settings, meta: dict[str, str], encoder: ClipEncoder | None) -> tuple[str, str]:
    """The model of this store: an existing store's own unless the user asked for one explicitly."""
    if encoder is not None:
        return encoder.name, encoder.pretrained
    explicit = settings.model_fields_set
    if "model" in meta and "model" not in explicit:
        return meta["model"], meta["pretrained"]
    if "model" in meta and meta["model"] == settings.model and "pretrained" not in explicit:
        return meta["model"], meta["pretrained"]
    return settings.model, canonical_pretrained(settings.model, settings.pretrained)


def canonical_pretrained(model: str, pretrained: str | None) -> str:
    """The weights label recorded for a store: a tag, an absolute checkpoint path, or random-seed-N."""
    from img_agent.errors import ConfigError
    from img_agent.embed.encoder import MODEL_PRESETS, default_pretrained

    preset = MODEL_PRESETS.get(model)
    if preset is not None and preset.random_weights:
        return preset.weights_label
    value = pretrained or default_pretrained(model)
    if not value:
        raise ConfigError(
            f"Model {model!r} has no default weights; pass --pretrained TAG (see open_clip.list_pretrained()) "
            "or --pretrained /path/to/checkpoint."
        )
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value
