"""EXIF facts for images indexed before they were recorded (a store migrated from format 1).

When an add meets such a file unchanged, only its metadata is read (the header: no pixel decoded,
nothing re-encoded) and stored; its vector and id stay as they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from img_agent.index.catalog import Catalog
from img_agent.results import PhotoMeta, ProgressCallback

__all__ = ["BATCH", "backfill_photos"]

logger = logging.getLogger(__name__)

BATCH = 256
"""Files read per committed transaction (and per progress report)."""


def backfill_photos(
    catalog: Catalog,
    items: Sequence[tuple[int, str]],
    *,
    max_bytes: int,
    max_pixels: int,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Read and store the EXIF facts of the files ``items`` (id, path); how many were stored.

    A file that cannot be read now is left for a later add. Progress is reported per
    :data:`BATCH` files when there are more than one batch; ``cancel`` stops between batches.
    """
    from img_agent.embed.photos import read_photo

    stored = 0
    total = len(items)
    for start in range(0, total, BATCH):
        if cancel is not None and cancel.is_set():
            break
        found: list[tuple[int, PhotoMeta]] = []
        for image_id, path in items[start : start + BATCH]:
            photo = read_photo(path, max_bytes=max_bytes, max_pixels=max_pixels)
            if photo is not None:
                found.append((image_id, photo))
        if found:
            catalog.set_photo(found)
        stored += len(found)
        done = min(start + BATCH, total)
        if progress is not None and total > BATCH:
            progress(done, total, f"read photo metadata of {done} of {total} images indexed before it was recorded")
    if stored:
        logger.info("recorded the photo metadata of %d image(s) indexed before it was read", stored)
    return stored
