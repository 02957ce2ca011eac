"""What goes into and out of the store: new / unchanged / duplicate decisions, commits, reports.

Adding files flows one way::

    walk (each file once) -> unchanged by path, size and mtime? -> read + hash ahead ->
    known content? (decided here, against the catalog) -> decode ahead -> batched forward -> commit

A file whose bytes are already indexed at the same path (only its mtime changed) is touched and
counted unchanged; the same bytes at another path, or twice in one call, are skipped as a
duplicate. Each encoded batch is committed on its own, durably: vectors appended and fsynced,
then the catalog rows committed (the acknowledgement), then a new view published.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from img_agent.errors import InvalidInputError, NotFoundError, StoreWriteError
from img_agent.index.catalog import INT64_MAX, INT64_MIN
from img_agent.index.exclusions import Exclusions
from img_agent.index.integrity import extend_segments
from img_agent.index.maintenance import Maintenance
from img_agent.index.notes import normalise_tags
from img_agent.index.photo_backfill import backfill_photos
from img_agent.index.rows import PHOTO_FIELDS, NewImage
from img_agent.index.search import normalise
from img_agent.index.state import State
from img_agent.results import (
    AddReport,
    FileFacts,
    PhotoMeta,
    ProgressCallback,
    RemoveReport,
    SkippedItem,
)

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder
    from img_agent.index.ray_ingest import RayCluster
    from img_agent.embed.images import Confinement, RawFile


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Content already indexed at this very path: only the file's mtime changed."""

    image_id: int
    mtime: float
    unread_path: str | None = None
    """The path, when the row's EXIF facts were never read (a store migrated from format 1)."""


@dataclass
class Scan:
    """The outcome of walking the inputs of an add: files to read, and what is already decided."""

    paths: list[Path]
    todo: list[Path] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    report: AddReport = field(default_factory=AddReport)
    unread_meta: list[tuple[int, str]] = field(default_factory=list)
    """(id, path) of unchanged files whose EXIF facts were never read: read after encoding."""


@contextmanager
def _kept_on_failure(report: AddReport) -> Iterator[None]:
    """A failed write (a full disk) says how much of this add was committed and is kept."""
    try:
        yield
    except StoreWriteError as exc:
        raise StoreWriteError(
            f"{exc} This add committed {len(report.added)} image(s) before it stopped; they are kept and searchable. "
            "Running the same command again after freeing space adds the rest (images already added are counted "
            "as unchanged)."
        ) from exc


class Ingest:
    """Adds and removes over ``state``; auto-merges through ``maintenance``."""

    def __init__(self, state: State, maintenance: Maintenance) -> None:
        self._state = state
        self._maintenance = maintenance

    # -- adding files -------------------------------------------------------------------------
    def scan(self, paths: Iterable[str | Path], *, recursive: bool, confine: Confinement | None,
             walked: bool = False) -> Scan:
        """Walk ``paths``: files unchanged since they were indexed (same size and mtime) are counted, the rest is to do.

        The given folders are remembered as :meth:`indexed_roots`, unless ``confine`` is given. A file removed
        by request is skipped when found in a folder, and readmitted when named itself (unless ``walked``: every
        path counts as found by a walk, as a folder watch reports them).
        """
        from img_agent.embed.images import iter_image_files

        catalog = self._state.catalog
        scan = Scan(paths=[Path(p).expanduser() for p in paths])
        report = scan.report
        exclusions = Exclusions(catalog, scan.paths, walked=walked)
        for item in iter_image_files(scan.paths, recursive=recursive, confine=confine):
            if isinstance(item, SkippedItem):
                report.skipped.append(item)
                continue
            if (kept_out := exclusions.skip(str(item))) is not None:
                report.skipped.append(kept_out)
                continue
            scan.seen.add(str(item))
            known = catalog.live_by_path(str(item))
            if known is not None:
                try:
                    st = item.stat()
                except OSError as exc:
                    report.skipped.append(SkippedItem(path=str(item), reason=f"cannot read file: {exc.strerror or exc}"))
                    continue
                if known.size == st.st_size and known.mtime == st.st_mtime:
                    report.unchanged += 1
                    if not known.meta_read:
                        scan.unread_meta.append((known.id, known.path))
                    continue
            scan.todo.append(item)
        exclusions.commit()
        if confine is None:
            self._remember_roots(scan.paths)
        return scan

    def add(
        self,
        scan: Scan,
        encoder: ClipEncoder,
        *,
        remove_missing: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        ray: RayCluster | None = None,
    ) -> AddReport:
        """Read, sort out, encode and commit the files of ``scan``; the finished report.

        With ``remove_missing``, images indexed under the given folders whose files are gone are removed.
        With ``ray``, the files are read, decoded and encoded on that Ray cluster (:mod:`~img_agent.index.ray_ingest`).
        """
        from contextlib import nullcontext

        from img_agent.embed.pipeline import Encoded, Pipeline

        settings = self._state.settings
        report = scan.report
        pipeline = None if ray is not None else Pipeline(
            encoder, max_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels,
            batch_size=settings.batch_size, workers=settings.workers)
        with pipeline or nullcontext(), _kept_on_failure(report):
            if pipeline is not None:
                fresh = self._sort_out(pipeline.read(scan.todo))
                results = pipeline.encode(fresh, total=len(scan.todo), progress=progress, cancel=cancel)
            else:
                from img_agent.index.ray_ingest import sorted_on_ray

                results = sorted_on_ray(scan.todo, encoder, settings, ray, self._known, progress, cancel)
            for out in results:
                if isinstance(out, Encoded):
                    finite = np.isfinite(out.vectors).all(axis=1)
                    report.skipped += [SkippedItem(path=f.path, reason="the model gave a vector with NaN or infinite "
                                                   "values; check the file, or try another model") for f, ok in
                                       zip(out.files, finite, strict=True) if not ok]
                    if not finite.all():
                        out = Encoded([f for f, ok in zip(out.files, finite, strict=True) if ok], out.vectors[finite])
                    if not out.files:
                        continue
                    ids, replaced = self._commit_files(out.files, out.vectors)
                    report.added += ids
                    report.added_paths += [f.path for f in out.files]
                    report.replaced += replaced
                    if self._maintenance.maybe_auto_merge():
                        report.merged = True
                elif isinstance(out, Unchanged):
                    self._state.catalog.touch(out.image_id, out.mtime)
                    report.unchanged += 1
                    if out.unread_path is not None:
                        scan.unread_meta.append((out.image_id, out.unread_path))
                else:
                    report.skipped.append(out)
            backfill_photos(self._state.catalog, scan.unread_meta, max_bytes=settings.max_file_bytes,
                            max_pixels=settings.max_image_pixels, progress=progress, cancel=cancel)
        report.cancelled = bool(cancel is not None and cancel.is_set())
        if remove_missing and not report.cancelled:
            report.removed_missing = self._remove_missing([p for p in scan.paths if p.is_dir()], scan.seen)
        return report

    def _sort_out(self, reads: Iterable[RawFile | SkippedItem]) -> Iterator[RawFile | Unchanged | SkippedItem]:
        """Each read file as it is (new content), :class:`Unchanged`, or a duplicate skip; skips pass."""
        first_with: dict[str, str] = {}  # sha256 -> path of the first new file with that content here
        for item in reads:
            yield item if isinstance(item, SkippedItem) else (self._known(item.facts, first_with) or item)

    def _known(self, facts: FileFacts, first_with: dict[str, str]) -> Unchanged | SkippedItem | None:
        """What a file whose content is already indexed (or met earlier in this add, ``first_with``) comes to;
        None for new content (then recorded in ``first_with``)."""
        row = self._state.catalog.live_by_sha(facts.sha256)
        if row is not None and row.path == facts.path:
            return Unchanged(row.id, facts.mtime, None if row.meta_read else row.path)
        if row is not None:
            return SkippedItem(path=facts.path, reason=f"duplicate of id {row.id} ({row.path})")
        if facts.sha256 in first_with:
            return SkippedItem(path=facts.path, reason=f"duplicate of {first_with[facts.sha256]} (same content in "
                                                       "this batch)")
        first_with[facts.sha256] = facts.path
        return None

    def _commit_files(self, files: list[FileFacts], vecs: np.ndarray) -> tuple[list[int], list[int]]:
        with self._state.write_lock:
            replaced = list(self._state.catalog.ids_for_paths([f.path for f in files]).values())
            return self._append(vecs, [NewImage(f) for f in files], replaced), replaced

    def _remember_roots(self, paths: list[Path]) -> None:
        roots = set(self.indexed_roots())
        new = {str(p.resolve()) for p in paths if p.is_dir()} - roots
        if new:
            self._state.catalog.set_meta(indexed_roots=json.dumps(sorted(roots | new)))

    def indexed_roots(self) -> list[str]:
        """Folders that were ever given to an unconfined add (the default allowed roots of the tools)."""
        return json.loads(self._state.catalog.meta().get("indexed_roots", "[]"))

    def _remove_missing(self, folders: list[Path], seen: set[str]) -> list[int]:
        gone = []
        for folder in folders:
            for image_id, path in self._state.catalog.live_paths_under(str(folder.resolve())):
                if path not in seen and not os.path.exists(path):
                    gone.append(image_id)
        return self.remove(ids=gone, exclude=False).removed if gone else []

    # -- adding vectors -----------------------------------------------------------------------
    def add_vectors(
        self, vectors: np.ndarray, paths: Sequence[str], *, dim: int | None, metadata: Sequence[dict] | None = None
    ) -> list[int]:
        """Add precomputed embeddings with their paths; see :meth:`Engine.add_vectors`.

        A ``metadata`` item may carry sha256, size, width, height, format, mtime, description, tags and the
        :class:`~img_agent.results.PhotoMeta` keys (taken_at, camera_make, gps_lat, ...).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(paths):
            raise InvalidInputError(
                f"vectors must be a 2-d array with one row per path; got shape {vectors.shape} for {len(paths)} paths."
            )
        if dim is not None and vectors.shape[1] != dim:
            raise InvalidInputError(f"vectors are {vectors.shape[1]}-d but this store holds {dim}-d embeddings.")
        if metadata is not None and len(metadata) != len(paths):
            raise InvalidInputError("metadata must have one entry per path.")
        if not len(vectors):
            return []
        vectors = normalise(vectors, "vectors")
        rows = [_vector_row(str(path), dict(metadata[i]) if metadata is not None else {}) for i, path in enumerate(paths)]
        if len({r.file.path for r in rows}) != len(rows):
            raise InvalidInputError("paths must be unique within one add_vectors call.")
        state = self._state
        with state.write_lock:
            found = state.catalog.ids_for_paths([r.file.path for r in rows]) if state.catalog.next_id() else {}
            ids = self._append(vectors, rows, list(found.values()))
        self._maintenance.maybe_auto_merge()
        return ids

    def _append(self, vecs: np.ndarray, rows: list[NewImage], replaced: list[int]) -> list[int]:
        """Announce + append + commit + publish; the caller holds the write lock.

        The catalog first records how far the vector file may grow (so opening knows the rows an
        unfinished add left, and cuts only those), then the rows are appended and fsynced, then
        the catalog commits the images with the checksums of the segments that hold them.
        """
        state = self._state
        catalog = state.catalog
        data = np.ascontiguousarray(vecs, dtype="<f4")
        catalog.set_meta(vector_rows_intent=state.vectors.rows + len(rows))
        start = state.vectors.append(data)
        if catalog.meta().get("dim") is None:
            catalog.set_meta(dim=state.vectors.dim)
        ids = np.arange(start, start + len(rows), dtype=np.int64)
        try:
            segments = catalog.segments()
            new = extend_segments(segments[-1] if segments else None, start, data.tobytes(), state.vectors.row_bytes)
            catalog.insert(ids.tolist(), rows, replaced=replaced, segments=new)
        except BaseException:
            state.vectors.rollback(start)
            raise
        view = state.view
        live = np.zeros(start + len(rows), dtype=bool)
        live[: len(view.live)] = view.live
        live[ids] = True
        if replaced:
            live[np.asarray(replaced, dtype=np.int64)] = False
        if state.external is not None:
            state.view = view.with_live(live)
            state.external.added(ids, replaced)
        else:
            state.view = view.with_live(live, ids, np.asarray(vecs, dtype=np.float32))
        return ids.tolist()

    # -- removing -----------------------------------------------------------------------------
    def remove(self, ids: Sequence[int] = (), paths: Sequence[str | Path] = (), *, dry_run: bool = False,
               exclude: bool = True) -> RemoveReport:
        """Remove images by id or path (a folder path removes everything indexed under it); see :meth:`Engine.remove`.

        With ``exclude`` (a removal by request) the removed paths stay out of later folder walks.
        """
        catalog = self._state.catalog
        report = RemoveReport()
        by_id: set[int] = set()
        no_id: list[str] = []  # beyond int64: no image can have it
        for raw in ids:
            if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
                raise InvalidInputError(f"Image ids are integers; got {raw!r}.")
            if INT64_MIN <= int(raw) <= INT64_MAX:
                by_id.add(int(raw))
            else:
                no_id.append(str(int(raw)))
        wanted = set(by_id)
        removed_before: list[int] = []  # files named by path that were removed earlier
        for raw in paths:
            path = str(Path(raw).expanduser().resolve())
            under = catalog.live_ids_at(path)
            if under:
                wanted.update(under)
            elif (old := catalog.removed_id(path)) is not None:
                removed_before.append(old)
            else:
                report.not_found.append(str(raw))
        if dry_run:
            live = self._state.view.live
            report.dry_run = True
            removed = [i for i in sorted(wanted) if 0 <= i < len(live) and live[i]]
        else:
            removed = self._mark_removed(sorted(wanted), exclude=exclude)
        report.removed = removed
        unmatched = sorted(by_id - set(removed))
        known = catalog.records(unmatched, include_deleted=True)  # any id left here that has a row was removed before
        report.already_removed = sorted({i for i in unmatched if i in known} | set(removed_before))
        report.not_found = [str(i) for i in unmatched if i not in known] + no_id + report.not_found
        if not removed and not report.already_removed and (ids or paths):
            raise NotFoundError(
                f"No live image matched {', '.join(report.not_found)}. Use ids from search results or "
                "'img-agent status', or indexed file paths."
            )
        return report

    def _mark_removed(self, wanted: list[int], *, exclude: bool) -> list[int]:
        """Mark ``wanted`` deleted in the catalog (``exclude``: recording their paths as removed by request, in
        the same transaction) and publish the view without them; the ids that were live."""
        catalog = self._state.catalog
        with self._state.write_lock:
            removed = catalog.mark_deleted(wanted, exclude=exclude)
            if removed:
                view = self._state.view
                live = view.live.copy()
                live[np.asarray(removed, dtype=np.int64)] = False
                self._state.view = view.with_live(live)
                if self._state.external is not None:
                    self._state.external.removed(removed)
        return removed


def _vector_row(path: str, m: dict) -> NewImage:
    """The catalog row of a vector added with metadata ``m`` (tags normalised as every tag is)."""
    if not m:
        return NewImage(FileFacts(path=path, size=0, mtime=0.0, sha256=""))
    photo_keys = [key for key in PHOTO_FIELDS if key in m]
    photo = PhotoMeta(**{key: m[key] for key in photo_keys}) if photo_keys else None
    facts = FileFacts(
        path=path, size=int(m.get("size", 0)), mtime=float(m.get("mtime", 0.0)), sha256=str(m.get("sha256", "")),
        width=int(m.get("width", 0)), height=int(m.get("height", 0)), format=str(m.get("format", "")), photo=photo,
    )
    return NewImage(facts, m.get("description"), tuple(normalise_tags(m.get("tags", ()))))
