"""The catalog's row types: what is inserted, what is looked up, and the ids by state loaded at open."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from img_agent.results import FileFacts, ImageRecord, PhotoMeta

PHOTO_FIELDS = ("taken_at", "taken_offset", "camera_make", "camera_model", "lens", "gps_lat", "gps_lon", "orientation")
"""The :class:`~img_agent.results.PhotoMeta` fields, each a column of the same name."""
PHOTO_COLUMNS = ", ".join(PHOTO_FIELDS)
PHOTO_MARKS = ",".join("?" * len(PHOTO_FIELDS))
RECORD_COLUMNS = (
    "id, path, sha256, size, width, height, format, mtime, added_at, description, "
    "(SELECT json_group_array(tag) FROM (SELECT tag FROM image_tags t WHERE t.id = images.id ORDER BY tag)), "
    + PHOTO_COLUMNS
)


@dataclass(frozen=True)
class NewImage:
    """A row to insert: the file's facts and optional notes (its id comes from the vector store)."""

    file: FileFacts
    description: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveRow:
    id: int
    sha256: str
    size: int
    mtime: float
    path: str
    meta_read: int = 1
    """0 for rows indexed before EXIF facts were recorded (a store migrated from format 1)."""


@dataclass(frozen=True)
class StateArrays:
    """Ids by state, as loaded at open: enough to rebuild the in-memory view."""

    next_id: int
    buffer_ids: np.ndarray
    main_ids: np.ndarray
    tombstone_ids: np.ndarray
    unsaved_ids: np.ndarray  # in the main index but not in its file: re-added at open


def photo_values(photo: PhotoMeta | None) -> tuple:
    """The :data:`PHOTO_COLUMNS` values of ``photo`` (all NULL when its metadata was not read)."""
    return tuple(getattr(photo, name) for name in PHOTO_FIELDS) if photo is not None else (None,) * len(PHOTO_FIELDS)


def record_of(row: tuple, cls: type[ImageRecord] = ImageRecord, **extra: object) -> ImageRecord:
    """The record of a row selected as :data:`RECORD_COLUMNS` (a ``cls`` such as SearchHit takes ``extra`` fields)."""
    return cls(
        id=row[0], path=row[1], sha256=row[2], size=row[3], width=row[4], height=row[5], format=row[6],
        mtime=row[7], added_at=row[8], description=row[9], tags=json.loads(row[10] or "[]"),
        **dict(zip(PHOTO_FIELDS, row[11:], strict=True)), **extra,
    )
