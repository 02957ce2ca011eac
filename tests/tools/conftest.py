"""Fixtures for the tool surface: a small in-memory fake of the engine, and tools over it.

The fake follows the engine's contract (types, errors, k handling, filters, removal, progress and
cancellation) but not its semantics: scores are made up. It lets the adapters be tested without
the model or faiss; the real engine is driven end to end in ``test_mcp_stdio.py``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from img_agent.config import MAX_TOPK, Settings
from img_agent.errors import BusyError, ImageDecodeError, InvalidInputError, NotFoundError
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
from img_agent.tools.definitions import ImageTools
from img_agent.tools.sandbox import Sandbox

DIM = 8


class FakeEngine:
    """An engine stand-in: real files and thumbnails, made-up scores."""

    def __init__(self, settings: Settings, *, delay: float = 0.0) -> None:
        self.settings = settings
        self.delay = delay
        self.records: dict[int, ImageRecord] = {}
        self.live: set[int] = set()
        self.generation = 0
        self.busy = False
        self.closed = False
        self.add_finished = threading.Event()
        self.last_add: AddReport | None = None
        self._lock = threading.Lock()

    # -- the Engine API used by the tools ----------------------------------------------------------
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
    ) -> AddReport:
        files = [Path(p) for p in paths]
        report = AddReport()
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
                if any(r.path == str(path) for i, r in self.records.items() if i in self.live):
                    report.unchanged += 1
                    continue
                image_id = len(self.records)
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

    def _check_k(self, k: int | None) -> int:
        if k is None:
            return self.settings.topk
        if not 1 <= k <= MAX_TOPK:
            raise InvalidInputError(f"k must be an integer from 1 to {MAX_TOPK}; got {k!r}.")
        return k

    def _hits(self, k: int | None, flt: SearchFilter | None, exclude: int | None = None) -> list[SearchHit]:
        k = self._check_k(k)
        ids = sorted(self.live - {exclude})
        if flt is not None and flt.path_prefix:
            ids = [i for i in ids if self.records[i].path.startswith(flt.path_prefix)]
        if flt is not None and flt.path_glob:
            ids = [i for i in ids if fnmatch.fnmatchcase(self.records[i].path, flt.path_glob)]
        return [
            SearchHit(**self.records[i].model_dump(), rank=rank, score=round(0.9 - 0.01 * rank, 4))
            for rank, i in enumerate(ids[:k], start=1)
        ]

    def search_text(self, query: str, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        if not query.strip():
            raise InvalidInputError("The text query is empty; describe what the images should show.")
        return self._hits(k, filter)

    def search_image(self, image: Path | str | bytes, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as decoded:
                decoded.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageDecodeError(f"cannot decode the image: {type(exc).__name__}. Send a JPEG, PNG or WebP file.") from exc
        return self._hits(k, filter)

    def search_similar(self, image_id: int, k: int | None = None, filter: SearchFilter | None = None) -> list[SearchHit]:
        if image_id not in self.live:
            raise NotFoundError(f"No live image has id {image_id}. Use an id from search results.")
        return self._hits(k, filter, exclude=image_id)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), DIM), dtype=np.float32) / np.sqrt(DIM)

    def search_vectors(self, queries: np.ndarray, k: int | None = None, filter: SearchFilter | None = None) -> list[list[SearchHit]]:
        return [self._hits(k, filter) for _ in range(len(queries))]

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str | Path] = ()) -> RemoveReport:
        report = RemoveReport()
        for image_id in ids:
            if image_id in self.live:
                self.live.discard(image_id)
                report.removed.append(image_id)
            else:
                report.not_found.append(str(image_id))
        for path in paths:
            match = [i for i in sorted(self.live) if self.records[i].path == str(path)]
            if match:
                self.live.difference_update(match)
                report.removed.extend(match)
            else:
                report.not_found.append(str(path))
        if not report.removed:
            raise NotFoundError(f"No live image matched {', '.join(report.not_found)}. Use ids from search results.")
        return report

    def _maintenance(self, operation: str, progress: ProgressCallback | None) -> MaintenanceReport:
        if self.busy:
            raise BusyError("A merge or rebuild is already running; try again when it has finished.")
        if progress is not None:
            progress(len(self.live), len(self.live), operation)
        self.generation += 1
        return MaintenanceReport(
            operation=operation, moved=len(self.live), generation=self.generation, index="Flat", seconds=0.0, retrained=False
        )

    def merge(self, progress: ProgressCallback | None = None) -> MaintenanceReport:
        return self._maintenance("merge", progress)

    def rebuild(self, progress: ProgressCallback | None = None, index_string: str | None = None) -> MaintenanceReport:
        if index_string is not None and index_string not in ("Flat", "auto"):
            raise InvalidInputError(f"Unknown index string {index_string!r}; use e.g. 'Flat' or 'IVF1024,SQ8'.")
        return self._maintenance("rebuild", progress)

    def status(self) -> IndexStatus:
        return IndexStatus(
            live=len(self.live), main=0, buffer=len(self.live), deleted=len(self.records) - len(self.live),
            index="none", index_string="auto", trained=False, model=self.settings.model,
            pretrained=self.settings.pretrained or "", dim=DIM, generation=self.generation, bytes_on_disk=0,
            data_dir=str(self.settings.data_dir), merge_threshold=self.settings.merge_threshold,
        )

    def get(self, ids: Sequence[int]) -> list[ImageRecord]:
        missing = [str(i) for i in ids if i not in self.live]
        if missing:
            raise NotFoundError(f"No live image has id {', '.join(missing)}.")
        return [self.records[i] for i in ids]

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        record = self.get([image_id])[0]
        with Image.open(record.path) as original:
            image = original.convert("RGB")
        image.thumbnail((max_side, max_side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_engine(settings: Settings) -> FakeEngine:
    return FakeEngine(settings)


@pytest.fixture
def tools(fake_engine: FakeEngine, image_dir: Path) -> ImageTools:
    """Tools over the fake engine; only ``image_dir`` is allowed."""
    return ImageTools(fake_engine, Sandbox([image_dir], max_file_bytes=fake_engine.settings.max_file_bytes))


@pytest.fixture
def indexed_tools(tools: ImageTools, image_dir: Path) -> ImageTools:
    """Tools whose index holds the 12 images of ``image_dir``."""
    tools.add_images([str(image_dir)])
    return tools
