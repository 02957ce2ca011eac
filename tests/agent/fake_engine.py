"""A tiny stand-in for the engine with scripted rankings per query text (for agent tests).

``encode_text`` returns one row per text whose single component indexes the text, and
``search_vectors`` looks the text up in ``rankings`` (``{query: [(image_id, cosine), ...]}``), so a
test states exactly what each query variant retrieves.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from img_agent.errors import InvalidInputError, NotFoundError
from img_agent.results import ImageRecord, SearchFilter, SearchHit


def record(image_id: int, path: str | None = None, **extra: object) -> ImageRecord:
    """A plausible catalog record."""
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
    """A search hit for ``image_id``."""
    return SearchHit(**record(image_id, path).model_dump(), rank=rank, score=score)


class FakeEngine:
    """Engine double: scripted rankings, real JPEG thumbnails, call log."""

    def __init__(
        self,
        rankings: dict[str, list[tuple[int, float]]] | None = None,
        *,
        records: dict[int, ImageRecord] | None = None,
        default: list[tuple[int, float]] | None = None,
        broken_thumbnails: set[int] | None = None,
    ) -> None:
        self.rankings = rankings or {}
        self.default = default if default is not None else [(i, 0.3 - i * 0.01) for i in range(1, 9)]
        ids = {i for ranking in [*self.rankings.values(), self.default] for i, _ in ranking}
        self.records = records or {i: record(i) for i in sorted(ids)}
        self.broken_thumbnails = broken_thumbnails or set()
        self.encoded: list[str] = []
        self.searches: list[tuple[list[str], int]] = []
        self.thumbnails_made: list[int] = []
        self.closed = False

    def encode_text(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            self.encoded.append(text)
            rows.append([float(len(self.encoded) - 1)])
        return np.asarray(rows, dtype=np.float32)

    def search_vectors(
        self, queries: np.ndarray, k: int = 20, filter: SearchFilter | None = None
    ) -> list[list[SearchHit]]:
        if not 1 <= k <= 1000:
            raise InvalidInputError(f"k must be between 1 and 1000, got {k}.")
        texts = [self.encoded[int(row[0])] for row in queries]
        self.searches.append((texts, k))
        out: list[list[SearchHit]] = []
        for text in texts:
            ranking = self.rankings.get(text, self.default)
            hits = []
            for image_id, score in ranking:
                rec = self.records[image_id]
                if filter is not None and filter.path_prefix and not rec.path.startswith(filter.path_prefix):
                    continue
                hits.append(SearchHit(**rec.model_dump(), rank=len(hits) + 1, score=score))
            out.append(hits[:k])
        return out

    def search_text(self, query: str, k: int = 20, filter: SearchFilter | None = None) -> list[SearchHit]:
        return self.search_vectors(self.encode_text([query]), k, filter)[0]

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        if image_id in self.broken_thumbnails or image_id not in self.records:
            raise NotFoundError(f"Image {image_id} is not in the catalog.")
        self.thumbnails_made.append(image_id)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (image_id * 20 % 256, 100, 150)).save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    def close(self) -> None:
        self.closed = True
