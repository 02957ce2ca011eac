"""What the tools let out of the process and what they let be destroyed, confined to the sandbox.

- :class:`ConfinedImages` is the thumbnail source (and the retrieval view the LLM recipes get) of a
  set of tools: an indexed image's file is read with the sandbox's resolve-then-check
  (:meth:`~img_agent.tools.sandbox.Sandbox.read_file`) every time, so an image indexed outside the
  roots, or a file later replaced by a link out of them, yields no byte, only an error that the
  caller turns into a note.
- :func:`query_image_guard` checks a query image's declared size before it is decoded and bounds
  how many query images decode at once.
- :func:`removal_targets` confines the ids and paths a removal names to the roots.

Imports no torch and no faiss.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from img_agent.errors import (
    AccessDeniedError,
    ImageDecodeError,
    InvalidInputError,
    NotFoundError,
)
from img_agent.results import SearchFilter, SearchHit

if TYPE_CHECKING:
    import numpy as np

    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.tools.sandbox import Sandbox

QUERY_DECODE_SLOTS = max(1, os.cpu_count() or 1)
"""Query images decoded at the same time, at most (further calls wait their turn)."""
_QUERY_DECODES = threading.BoundedSemaphore(QUERY_DECODE_SLOTS)


class ConfinedImages:
    """An engine's thumbnails and retrieval, with every file byte read through ``sandbox``.

    Satisfies the agent's ``RetrievalEngine`` protocol (``encode_text``, ``search_vectors``,
    ``thumbnail``) and carries the engine's ``settings``, so the LLM recipes run on it unchanged.
    """

    def __init__(self, engine: Engine, sandbox: Sandbox) -> None:
        self.engine = engine
        self.sandbox = sandbox

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.engine.encode_text(texts)

    def search_vectors(self, queries: np.ndarray, k: int | None = None,
                       filter: SearchFilter | None = None) -> list[list[SearchHit]]:
        return self.engine.search_vectors(queries, k, filter)

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        """A JPEG thumbnail of indexed image ``image_id``, its file read inside the allowed folders only.

        Raises:
            NotFoundError: no live image has that id, or its file is gone.
            AccessDeniedError: its file lies (or now resolves) outside the allowed folders.
            NotFoundError: the file is no longer a readable image (changed since it was indexed).
        """
        from img_agent.embed.decode import decode_image_bytes, make_thumbnail

        [record] = self.engine.get([image_id])
        try:
            _, data = self.sandbox.read_file(record.path)
        except AccessDeniedError:
            raise AccessDeniedError(
                f"image {image_id} is outside the {self.sandbox.describe_roots()}, so no thumbnail is shown; "
                "serve with a --root that contains it to see it"
            ) from None
        except InvalidInputError as exc:  # missing, a folder now, too large
            raise NotFoundError(f"image {image_id}'s file cannot be read ({exc})") from None
        try:
            image = decode_image_bytes(data, max_pixels=self.engine.settings.max_image_pixels, draft_size=max_side)[0]
        except ImageDecodeError as exc:
            raise NotFoundError(
                f"image {image_id}'s file {record.path} is no longer a readable image ({str(exc).rstrip('. ')}); it "
                "changed after it was indexed: index its folder again to refresh it, or remove the image") from None
        return make_thumbnail(image, max_side=max_side, quality=quality)


@contextmanager
def query_image_guard(data: bytes, settings: Settings) -> Iterator[None]:
    """Hold a decode slot for query image ``data`` once its header shows a size within the limits.

    The header alone is read first (no pixel decoded): more pixels than ``settings.max_query_pixels``
    (or ``max_image_pixels``, whichever is lower) are refused before any large allocation.

    Raises:
        ImageDecodeError: not an image, or too many pixels (the reason says to downscale).
    """
    from img_agent.embed.decode import check_declared_size

    limit = min(settings.max_query_pixels, settings.max_image_pixels)
    try:
        check_declared_size(data, max_pixels=limit)
    except ImageDecodeError as exc:
        if not str(exc).startswith("image too large"):
            raise
        raise ImageDecodeError(f"{exc}; downscale it (CLIP looks at a few hundred pixels)") from None
    with _QUERY_DECODES:
        yield


# ---------------------------------------------------------------------------------- removal


def _live_records(engine: Engine, ids: Sequence[int]) -> dict[int, Any]:
    """Catalog records of the live ids among ``ids`` (unknown or removed ids are absent)."""
    try:
        return {record.id: record for record in engine.get(list(ids))}
    except NotFoundError:
        found: dict[int, Any] = {}
        for image_id in ids:
            try:
                [record] = engine.get([image_id])
            except NotFoundError:
                continue
            found[image_id] = record
        return found


def removal_targets(engine: Engine, sandbox: Sandbox, ids: Sequence[int],
                    paths: Sequence[str]) -> tuple[list[int], list[str]]:
    """The ids and resolved paths a removal may act on: every path must lie inside the roots, and so
    must the recorded path of every live id (unknown ids pass through, for the engine to report).

    Raises:
        AccessDeniedError: naming the refused ids and paths and the allowed folders.
    """
    if not sandbox.confines:
        return list(ids), list(paths)
    refused: list[str] = []
    resolved: list[str] = []
    for raw in paths:
        try:
            resolved.append(str(sandbox.confine(raw)))
        except AccessDeniedError:
            refused.append(repr(raw))
    records = _live_records(engine, ids) if ids else {}
    outside = [i for i in ids if i in records and not sandbox.allows_indexed(records[i].path)]
    refused.extend(f"id {i}" for i in outside)
    if refused:
        raise AccessDeniedError(
            f"Removal refused for {', '.join(refused[:20])}{' ...' if len(refused) > 20 else ''}: outside the "
            f"{sandbox.describe_roots()}. Remove only images inside them (nothing was removed)."
        )
    return list(ids), resolved
