"""The near-duplicate tool: groups of images showing the same picture, each with a suggested keeper.

:class:`DuplicateTools` is a mixin of :class:`~img_agent.tools.image_tools.ImageTools`; the search
itself lives in :mod:`img_agent.index.duplicates`. A folder an LLM names is confined to the
sandbox like every other path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from img_agent.index.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicatesReport
from img_agent.results import ProgressCallback
from img_agent.tools.spec import INJECTED, tool

if TYPE_CHECKING:
    from img_agent.index.engine import Engine
    from img_agent.tools.sandbox import Sandbox

DEFAULT_MAX_GROUPS = 50
"""Duplicate groups one call lists unless told otherwise."""
MAX_DUPLICATE_GROUPS = 1000
"""Most duplicate groups one call lists (the totals always count every group)."""


class DuplicateTools:
    """Finding near-duplicate images (mixed into ``ImageTools``, which provides ``engine`` and ``sandbox``)."""

    engine: Engine
    sandbox: Sandbox

    @tool(title="Find near-duplicate images", read_only=True, destructive=False, idempotent=True)
    def find_duplicates(
        self,
        threshold: Annotated[float | None, Field(
            gt=0, le=1,
            description=f"Cosine similarity (above 0, at most 1) from which two images count as the same picture; "
            f"null = {DEFAULT_DUPLICATE_THRESHOLD} (resized, re-encoded and slightly cropped copies). Higher finds "
            "only closer copies; 1.0 only identical embeddings.",
        )] = None,
        folder: Annotated[str | None, Field(
            max_length=4096,
            description="Only compare images indexed under this folder (inside the allowed folders; absolute, or "
            "relative to an allowed folder). null = the whole collection.",
        )] = None,
        max_groups: Annotated[int | None, Field(
            ge=1, le=MAX_DUPLICATE_GROUPS,
            description=f"List at most this many groups, largest first (1-{MAX_DUPLICATE_GROUPS}); null = "
            f"{DEFAULT_MAX_GROUPS}. total_groups and total_extras always count all of them.",
        )] = None,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> DuplicatesReport:
        """Find groups of indexed images that show the same picture (copies resized, re-encoded or slightly
        cropped), by the cosine similarity of their CLIP embeddings.

        Each group names a suggested keeper (most pixels, then largest file, then the oldest, then the smallest
        id) and its extras, with paths, sizes and each image's similarity to the keeper. Changes nothing: to drop
        the copies, call remove_images with the groups' extras ids (only images inside the allowed folders can
        be removed; the files are never touched).
        """
        where = str(self.sandbox.confine(folder)) if folder is not None and folder.strip() else None
        limit = max_groups if max_groups is not None else DEFAULT_MAX_GROUPS
        report = self.engine.find_duplicates(threshold, where, progress=progress, cancel=cancel)
        return report.limited(limit)
