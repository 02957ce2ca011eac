"""The slice of :class:`img_agent.index.engine.Engine` the agent layer uses, as protocols.

The agent depends on these methods only, so tests can pass a small fake and the agent does not
import the index package's heavy dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from img_agent.results import SearchFilter, SearchHit

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class ThumbnailSource(Protocol):
    """Anything that can render a JPEG thumbnail of a catalogued image."""

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        """JPEG bytes of image ``image_id``, longest side at most ``max_side``."""
        ...


@runtime_checkable
class RetrievalEngine(ThumbnailSource, Protocol):
    """Text encoding, vector search and thumbnails: what RAG search and QA need."""

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text embeddings, one row per text."""
        ...

    def search_vectors(
        self, queries: np.ndarray, k: int = 20, filter: SearchFilter | None = None
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query row, best first."""
        ...
