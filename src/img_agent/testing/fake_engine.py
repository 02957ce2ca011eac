"""An in-memory stand-in for :class:`img_agent.index.engine.Engine`: no model, no faiss, made-up scores.

It follows the engine's contract (types, errors, k handling, filters, removal, progress and
cancellation) but not its semantics, so the agent recipes, the tools and their adapters can be
tested without a model. Its collection is filled in two ways, which mix:

- scripted: ``rankings`` (``{query text: [(image_id, cosine), ...]}``) and ``default`` (the
  ranking of any other text query) name synthetic images (``/photos/img_NNN.jpg``) that exist from
  the start, with drawn thumbnails; a test states exactly what each query variant retrieves;
- from files: :meth:`FakeEngine.add_paths` catalogues real image files (walked with the ``walk``
  given, e.g. :func:`img_agent.embed.images.iter_image_files`, the engine's own walk), with
  thumbnails made from the files.

With ``default=None`` a query without a script ranks every live image in id order, scores falling
from 0.89 by 0.01. ``encode_text`` returns one row per text whose first component indexes the
text, so :meth:`FakeEngine.search_vectors` knows which text each row stands for.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.config import Settings
from img_agent.errors import (
    BusyError,
    ImageDecodeError,
    InvalidInputError,
    NotFoundError,
)
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
    check_k,
)

DIM = 8
"""Width of the fake's text vectors (and the dimension its status reports)."""

Ranking = Sequence[tuple[int, float]]
"""``[(image_id, cosine), ...]``, best first."""

DEFAULT_RANKING: Ranking = tuple((i, 0.3 - i * 0.01) for i in range(1, 9))
"""What any unscripted query finds by default: images 1..8 with falling scores."""

Walk = Callable[..., Iterable[Path | SkippedItem]]
"""``walk(paths, recursive=..., confine=...)`` -> image files and skipped items, like the engine's walk."""


def record(image_id: int, path: str | None = None, **extra: Any) -> ImageRecord:
    """A plausible catalog record of a synthetic image."""
    return ImageRecord(
        id=image_id,
        path=path or f"/photos/img_{image_id:03d}.jpg",
        sha256=f"{image_id:064x}",
        size=1000 + image_id,
        width=640,
        height=480,
        format="JPEG",
        mtime=1_700_000_000.0,
        added_at=1_700_000_000.0,
        **extra,
    )


def hit(image_id: int, score: float, rank: int = 1, path: str | None = None) -> SearchHit:
    """A search hit for synthetic image ``image_id``."""
    return SearchHit(**record(image_id, path).model_dump(), rank=rank, score=score)


class FakeEngine:
    """Engine double: scripted rankings or real files, real JPEG thumbnails, a log of what was asked.

    Args:
        rankings: per query text, the images it finds (synthetic images are made for their ids).
        default: the ranking of a text query without its own; ``None`` ranks every live image.
        records: the synthetic catalog, instead of records made from the ids in the rankings.
        broken_thumbnails: ids whose thumbnail fails with :class:`NotFoundError`.
        settings: what :meth:`status` and the default ``k`` read (default: ``Settings()``).
        walk: how :meth:`add_paths` expands folders; without one every path is taken as a file.
        delay: seconds :meth:`add_paths` waits after each image (to test progress and cancellation).

    Attributes a test may read: ``encoded`` (every text encoded), ``searches`` (``(texts, k)`` per
    vector search), ``thumbnails_made``, ``last_add`` and ``add_finished`` (set when an add ends),
    ``closed``; and set: ``busy`` (merge and rebuild then raise :class:`BusyError`), ``delay``.
    """

    def __init__(
        self,
        rankings: dict[str, Ranking] | None = None,
        *,
        default: Ranking | None = DEFAULT_RANKING,
        records: dict[int, ImageRecord] | None = None,
        broken_thumbnails: set[int] | None = None,
        settings: Settings | None = None,
        walk: Walk | None = None,
        delay: float = 0.0,
    ) -> None:
        self.rankings = dict(rankings or {})
        self.default = default
        scripted = [*self.rankings.values(), *([default] if default is not None else [])]
        ids = sorted({image_id for ranking in scripted for image_id, _ in ranking})
        self.records: dict[int, ImageRecord] = dict(records) if records is not None else {i: record(i) for i in ids}
        self.live: set[int] = set(self.records)
        self._drawn: set[int] = set(self.records)
        self.broken_thumbnails = set(broken_thumbnails or ())
        self.settings = settings if settings is not None else Settings()
        self.walk = walk
        self.delay = delay
        self.generation = 0
        self.busy = False
        self.closed = False
        self.encoded: list[str] = []
        self.searches: list[tuple[list[str], int]] = []
        self.thumbnails_made: list[int] = []
        self.add_finished = threading.Event()
        self.last_add: AddReport | None = None
        self._lock = threading.Lock()

    # -- searching ---------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in zip(rows, texts, strict=True):
            row[0] = len(self.encoded)
            self.encoded.append(text)
        return rows

    def search_vectors(
        self, queries: np.ndarray, k: int | None = None, filter: SearchFilter | None = None
    ) -> list[list[SearchHit]]:
        k = check_k(k, self.settings.topk)
        texts = [self.encoded[int(row[0])] for row in queries]
        self.searches.append((texts, k))
        return [self._ranked(self.rankings.get(text, self.default), k, filter) for text in texts]

    def search_text(self, query: str, k: int | None = None, filter: SearchFilter | None = None,
                    collapse: bool | float = False) -> list[SearchHit]:
        _no_collapse(collapse)
        if not query.strip():
            raise InvalidInputError("The text query is empty; describe what the images should show.")
        return self.search_vectors(self.encode_text([query]), k, filter)[0]

    def search_image(self, image: Path | str | bytes, k: int | None = None, filter: SearchFilter | None = None,
                     collapse: bool | float = False) -> list[SearchHit]:
        from PIL import Image, UnidentifiedImageError

        _no_collapse(collapse)
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as decoded:
                decoded.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageDecodeError(f"cannot decode the image: {type(exc).__name__}. Send a JPEG, PNG or WebP file.") from exc
        return self._ranked(None, check_k(k, self.settings.topk), filter)

    def search_similar(self, image_id: int, k: int | None = None, filter: SearchFilter | None = None,
                       collapse: bool | float = False) -> list[SearchHit]:
        _no_collapse(collapse)
        if image_id not in self.live:
            raise NotFoundError(f"No live image has id {image_id}. Use an id from search results.")
        return self._ranked(None, check_k(k, self.settings.topk), filter, exclude=image_id)

    def _ranked(
        self, ranking: Ranking | None, k: int, flt: SearchFilter | None, exclude: int | None = None
    ) -> list[SearchHit]:
        """The live images of ``ranking`` (None: all live images, in id order) that pass ``flt``."""
        if ranking is None:
            ranking = [(i, round(0.9 - 0.01 * rank, 4)) for rank, i in enumerate(sorted(self.live), start=1)]
        hits: list[SearchHit] = []
        for image_id, score in ranking:
            rec = self.records.get(image_id)
            if image_id == exclude or image_id not in self.live or rec is None or not _passes(rec, score, flt):
                continue
            hits.append(SearchHit(**rec.model_dump(), rank=len(hits) + 1, score=score))
        return hits[:k]

    # -- the collection ----------------------------------------------------------------------------
    def indexed_roots(self) -> list[str]:
        return []

    def add_paths(
        self,
        paths: Iterable[str | Path],
        *,
        recursive: bool = True,
        remove_missing: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        confine: object | None = None,
        walked: bool = False,
    ) -> AddReport:
        from PIL import Image, UnidentifiedImageError

        report = AddReport()
        files: list[Path] = []
        items = self.walk(paths, recursive=recursive, confine=confine) if self.walk else (Path(p) for p in paths)
        for item in items:
            if isinstance(item, SkippedItem):
                report.skipped.append(item)
            else:
                files.append(item)
        for done, path in enumerate(files, start=1):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            try:
                with Image.open(path) as image:
                    width, height, fmt = image.width, image.height, image.format or "?"
            except (OSError, UnidentifiedImageError) as exc:
                report.skipped.append(SkippedItem(path=str(path), reason=f"not an image ({type(exc).__name__})"))
                continue
            with self._lock:
                if any(self.records[i].path == str(path) for i in self.live):
                    report.unchanged += 1
                    continue
                image_id = max(self.records, default=-1) + 1
                data = path.read_bytes()
                self.records[image_id] = ImageRecord(
                    id=image_id, path=str(path), sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    width=width, height=height, format=fmt, mtime=path.stat().st_mtime, added_at=time.time(),
                    tags=["fake"],
                )
                self.live.add(image_id)
            report.added.append(image_id)
            report.added_paths.append(str(path))
            if progress is not None:
                progress(done, len(files), "encoding images")
            if self.delay:
                time.sleep(self.delay)
        self.last_add = report
        self.add_finished.set()
        return report

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str | Path] = (), *, dry_run: bool = False,
               exclude: bool = True) -> RemoveReport:
        report = RemoveReport(dry_run=dry_run)
        for image_id in ids:
            if image_id in self.live:
                report.removed.append(image_id)
            elif image_id in self.records:
                report.already_removed.append(image_id)
            else:
                report.not_found.append(str(image_id))
        for path in paths:
            match = [i for i in sorted(self.live) if self.records[i].path == str(path)]
            if match:
                report.removed.extend(match)
            else:
                report.not_found.append(str(path))
        if not dry_run:
            self.live.difference_update(report.removed)
        if not report.removed and not report.already_removed:
            raise NotFoundError(f"No live image matched {', '.join(report.not_found)}. Use ids from search results.")
        return report

    def get(self, ids: Sequence[int]) -> list[ImageRecord]:
        missing = [str(i) for i in ids if i not in self.live]
        if missing:
            raise NotFoundError(f"No live image has id {', '.join(missing)}.")
        return [self.records[i] for i in ids]

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        from PIL import Image

        if image_id in self.broken_thumbnails:
            raise NotFoundError(f"Image {image_id} is not in the catalog.")
        if image_id in self._drawn:
            image = Image.new("RGB", (8, 8), (image_id * 20 % 256, 100, 150))
        else:
            with Image.open(self.get([image_id])[0].path) as original:
                image = original.convert("RGB")
            image.thumbnail((max_side, max_side))
        self.thumbnails_made.append(image_id)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()

    # -- maintenance -------------------------------------------------------------------------------
    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        return self._maintenance("merge", progress)

    def check_index_string(self, index_string: str | None) -> None:
        if index_string is not None and index_string not in ("Flat", "auto"):
            raise InvalidInputError(f"Unknown index string {index_string!r}; use e.g. 'Flat' or 'IVF1024,SQ8'.")

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None,
                cancel: threading.Event | None = None) -> MaintenanceReport:
        self.check_index_string(index_string)
        if cancel is not None and cancel.is_set():
            return MaintenanceReport(operation="rebuild", moved=0, generation=self.generation, index="Flat",
                                     seconds=0.0, retrained=False, cancelled=True)
        return self._maintenance("rebuild", progress)

    def _maintenance(self, operation: str, progress: ProgressCallback | None) -> MaintenanceReport:
        if self.busy:
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        if progress is not None:
            progress(len(self.live), len(self.live), operation)
        self.generation += 1
        return MaintenanceReport(
            operation=operation, moved=len(self.live), generation=self.generation, index="Flat", seconds=0.0, retrained=False
        )

    @property
    def live_count(self) -> int:
        return len(self.live)

    def status(self) -> IndexStatus:
        return IndexStatus(
            live=len(self.live), main=0, buffer=len(self.live), deleted=len(self.records) - len(self.live),
            index="none", index_string="auto", trained=False, model=self.settings.model,
            pretrained=self.settings.pretrained or "", dim=DIM, generation=self.generation, bytes_on_disk=0,
            data_dir=str(self.settings.data_dir), merge_threshold=self.settings.merge_threshold,
        )

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _passes(rec: ImageRecord, score: float, flt: SearchFilter | None) -> bool:
    """Whether ``rec`` meets ``flt``: folder, glob, formats, tags, text, size, GPS and score conditions
    (time ranges and bbox are the real engine's; a fake given one refuses it)."""
    if flt is None:
        return True
    if any(getattr(flt, name) is not None for name in ("taken_after", "taken_before", "modified_after",
                                                         "modified_before", "bbox")):
        raise InvalidInputError("FakeEngine does not apply time or bbox conditions; test them on a real engine.")
    tags = {t.lower() for t in rec.tags}
    path = rec.path if flt.glob_case_sensitive else rec.path.lower()
    checks = (
        flt.folder is None or path_under(rec.path, flt.folder),
        flt.glob is None or fnmatch.fnmatchcase(path, flt.glob if flt.glob_case_sensitive else flt.glob.lower()),
        flt.formats is None or rec.format.upper() in {f.upper().replace("JPG", "JPEG") for f in flt.formats},
        flt.camera is None or flt.camera.lower() in f"{rec.camera_make or ''} {rec.camera_model or ''}".lower(),
        flt.description is None or flt.description.lower() in (rec.description or "").lower(),
        flt.has_gps is None or flt.has_gps == (rec.gps_lat is not None and rec.gps_lon is not None),
        flt.min_width is None or rec.width >= flt.min_width,
        flt.min_height is None or rec.height >= flt.min_height,
        not flt.tags_any or bool(tags & {t.lower() for t in flt.tags_any}),
        not flt.tags_all or {t.lower() for t in flt.tags_all} <= tags,
        not flt.tags_none or not tags & {t.lower() for t in flt.tags_none},
        flt.min_score is None or score >= flt.min_score,
    )
    return all(checks)


def path_under(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder`` or below it, by whole components."""
    return path.startswith(folder.rstrip("/") + "/")


def _no_collapse(collapse: bool | float) -> None:
    """The fake keeps no vectors to compare: collapsing is refused rather than ignored."""
    if collapse is not False:
        raise InvalidInputError("The fake engine cannot collapse near-duplicates; test collapsing on a real Engine.")
