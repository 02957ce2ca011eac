"""Typed results of engine operations, shared by every adapter (CLI, MCP, OpenAI, agent)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from img_agent.errors import InvalidInputError

DEFAULT_TOPK = 20
"""Results a search returns unless told otherwise."""
MAX_TOPK = 1000
"""Most results one search may return."""
DEFAULT_DUPLICATE_THRESHOLD = 0.95
"""Cosine similarity from which two images count as the same picture (see the README's measurement)."""
MAX_TERM_WEIGHT = 100.0
"""Largest absolute weight of one term of a combined search."""

ProgressCallback = Callable[[int, "int | None", str], None]
"""``progress(done, total, message)``; total is None while unknown."""


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """What a photo's EXIF says about it; every field is None where the file does not say.

    ``taken_at`` is the moment the picture was taken as Unix seconds: exact (UTC) when the camera
    recorded its offset (``taken_offset``, e.g. ``"+02:00"``), else the camera's wall-clock time read
    as if it were UTC (``taken_offset`` None), which is what a date filter on holiday photos means.
    """

    taken_at: float | None = None
    taken_offset: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    gps_lat: float | None = None
    """Latitude in degrees, north positive."""
    gps_lon: float | None = None
    """Longitude in degrees, east positive."""
    orientation: int | None = None
    """EXIF orientation 1-8 as stored (the pixels are turned by it before encoding)."""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the catalog records about one image file, found when it is read (and decoded).

    ``width``, ``height`` and ``format`` stay 0 / ``""`` until the file is decoded, and for
    vectors added without them.
    """

    path: str
    """Absolute path of the file."""
    size: int
    """File size in bytes (the bytes that were hashed)."""
    mtime: float
    """File modification time (Unix seconds)."""
    sha256: str
    """Hex SHA-256 of the file bytes."""
    width: int = 0
    """Full pixel width after EXIF orientation."""
    height: int = 0
    """Full pixel height after EXIF orientation."""
    format: str = ""
    """Pillow format name, e.g. ``"JPEG"``, ``"PNG"``."""
    photo: PhotoMeta | None = None
    """The file's EXIF facts; None when they were not read (vectors added without a file)."""


class ImageRecord(BaseModel):
    """One catalogued image."""

    id: int = Field(description="Stable image id.")
    path: str = Field(description="Absolute path of the file when it was indexed.")
    sha256: str = Field(description="Content hash.")
    size: int = Field(description="File size in bytes.")
    width: int = Field(description="Pixel width (after EXIF orientation).")
    height: int = Field(description="Pixel height (after EXIF orientation).")
    format: str = Field(description="Image format as decoded, e.g. JPEG, PNG.")
    mtime: float = Field(description="File modification time (Unix seconds).")
    added_at: float = Field(description="When it was indexed (Unix seconds).")
    description: str | None = Field(None, description="Optional free-text description.")
    tags: list[str] = Field(default_factory=list, description="Tags, sorted.")
    taken_at: float | None = Field(None, description="When the photo was taken (Unix seconds; EXIF), if recorded.")
    taken_offset: str | None = Field(
        None, description="The camera's UTC offset, e.g. '+02:00'; null = unknown, taken_at is then local time read as UTC.")
    camera_make: str | None = Field(None, description="Camera maker (EXIF), if recorded.")
    camera_model: str | None = Field(None, description="Camera model (EXIF), if recorded.")
    lens: str | None = Field(None, description="Lens model (EXIF), if recorded.")
    gps_lat: float | None = Field(None, description="Latitude in degrees (north positive; EXIF GPS), if recorded.")
    gps_lon: float | None = Field(None, description="Longitude in degrees (east positive; EXIF GPS), if recorded.")
    orientation: int | None = Field(None, description="EXIF orientation 1-8, if recorded.")


class SearchHit(ImageRecord):
    """One search result: the catalog record plus its rank and cosine score."""

    rank: int = Field(description="1-based rank in this result list.")
    score: float = Field(description="Cosine similarity to the query, in [-1, 1]; higher is better.")


class GeoBox(BaseModel):
    """A latitude/longitude rectangle in degrees; min_lon greater than max_lon means it crosses the antimeridian."""

    model_config = ConfigDict(extra="forbid")

    min_lat: float = Field(description="Southern edge: latitude in degrees, -90 to 90 (north positive).")
    min_lon: float = Field(description="Western edge: longitude in degrees, -180 to 180 (east positive).")
    max_lat: float = Field(description="Northern edge: latitude in degrees, -90 to 90; at least min_lat.")
    max_lon: float = Field(
        description="Eastern edge: longitude in degrees, -180 to 180; smaller than min_lon for a box that "
        "crosses the antimeridian (e.g. min_lon 170, max_lon -170 spans Fiji).")

    @model_validator(mode="before")
    @classmethod
    def _from_sequence(cls, value: Any) -> Any:
        """Also accept ``[min_lat, min_lon, max_lat, max_lon]`` or the text ``"min_lat,min_lon,max_lat,max_lon"``."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)) and len(value) == 4:
            return dict(zip(("min_lat", "min_lon", "max_lat", "max_lon"), value, strict=True))
        return value


Moment = str | float
"""An ISO 8601 date (``"2024-06-01"``: that whole day) or date-time, or Unix seconds."""
_MOMENT = ("An ISO 8601 date ('2024-06-01' means that whole day), a date-time ('2024-06-01T14:30', read as UTC "
           "unless it carries an offset such as '+02:00' or 'Z') or Unix seconds.")


class SearchFilter(BaseModel):
    """Conditions on the images a search may return; every condition given must hold (AND). Applied inside
    the index search, so k results still come back whenever k images match (min_score may leave fewer)."""

    # Values (dates, ranges, formats) are checked by img_agent.index.filters.check, raising InvalidInputError.
    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(None, max_length=4096, description=(
        "Only images in this folder or below it, compared by whole path components ('/photos/holiday' does not "
        "include '/photos/holiday_2'). Absolute, or relative to an allowed folder."))
    glob: str | None = Field(None, max_length=4096, description=(
        "Only images whose absolute path matches this glob: '*' any characters including '/', '?' one character, "
        "'[abc]' / '[!abc]' one of / none of, e.g. '*/2024/*.jpg' or '*.png'. Case-insensitive unless "
        "glob_case_sensitive."))
    glob_case_sensitive: bool = Field(False, description="Match glob with case distinguished (default: ignore case).")
    formats: list[Annotated[str, Field(max_length=16)]] | None = Field(None, max_length=32, description=(
        "Only images of these formats, any case, e.g. ['JPEG', 'PNG'] ('jpg' means JPEG, 'tif' TIFF)."))
    taken_after: Moment | None = Field(None, description=f"Only photos taken at or after this moment. {_MOMENT}")
    taken_before: Moment | None = Field(None, description=(
        f"Only photos taken at or before this moment (a date includes that whole day). {_MOMENT} "
        "Photos without a recorded time are left out by either bound."))
    modified_after: Moment | None = Field(None, description=f"Only files modified at or after this moment. {_MOMENT}")
    modified_before: Moment | None = Field(None, description=(
        f"Only files modified at or before this moment (a date includes that whole day). {_MOMENT}"))
    camera: str | None = Field(None, max_length=200, description=(
        "Only photos whose camera 'make model' (EXIF) contains this text, any case, e.g. 'canon' or 'iphone 12'."))
    has_gps: bool | None = Field(None, description="true: only photos with a GPS position; false: only those without.")
    bbox: GeoBox | None = Field(None, description="Only photos whose GPS position lies in this box (edges included).")
    min_width: int | None = Field(None, description="Only images at least this many pixels wide (0 or more).")
    min_height: int | None = Field(None, description="Only images at least this many pixels high (0 or more).")
    tags_any: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100, description=(
        "Only images carrying at least one of these tags (any case)."))
    tags_all: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100, description=(
        "Only images carrying every one of these tags (any case)."))
    tags_none: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100, description=(
        "Leave out images carrying any of these tags (any case)."))
    description: str | None = Field(None, max_length=1000, description=(
        "Only images whose description contains this text, any case."))
    min_score: float | None = Field(None, description=(
        "Drop results whose cosine score is below this (-1 to 1; CLIP text-to-image matches usually score "
        "0.2-0.35); fewer than k results may then come back."))

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, value: Any) -> Any:
        """``null`` means "not given" for every field (strict tool schemas send it), blank text and empty lists too."""
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None and item != "" and item != []}
        return value

    @property
    def selects(self) -> bool:
        """Whether a condition on the catalog is set (everything but ``min_score``)."""
        return any(getattr(self, name) is not None for name in type(self).model_fields
                   if name not in ("glob_case_sensitive", "min_score"))

    @property
    def active(self) -> bool:
        """Whether any condition is set."""
        return self.selects or self.min_score is not None

    @classmethod
    def of(cls, **conditions: Any) -> SearchFilter | None:
        """The filter for these conditions, or None when none is set (None, blank text and empty lists count as unset)."""
        flt = cls(**conditions)
        return flt if flt.active else None


def check_k(k: int | None, default: int) -> int:
    """``k`` as an int (``default`` when None); raises :class:`InvalidInputError` unless 1 <= k <= MAX_TOPK."""
    if k is None:
        return default
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= MAX_TOPK:
        raise InvalidInputError(f"k must be an integer from 1 to {MAX_TOPK}; got {k!r}.")
    return int(k)


class SkippedItem(BaseModel):
    path: str
    reason: str


class JobInfo(BaseModel):
    """A long job (indexing) that runs on its own and outlives the call that started it."""

    id: str = Field(description="Job id, e.g. 'add-3'; pass it to cancel_job.")
    kind: str = Field(description="What the job does: 'add'.")
    description: str = Field(description="What it was asked to do.")
    state: Literal["running", "done", "failed", "cancelled"]
    done: int = Field(0, description="Files handled so far.")
    total: int | None = Field(None, description="Files to handle, once known.")
    message: str = Field("", description="The latest progress message.")
    started: float = Field(description="Unix time the job started.")
    finished: float | None = Field(None, description="Unix time it ended.")
    failure: str | None = Field(None, description="Why it failed.")
    result: dict | None = Field(None, description="Its final report, once done or cancelled.")


class AddReport(BaseModel):
    """What an add did, per file."""

    added: list[int] = Field(default_factory=list, description="Ids of newly indexed images.")
    added_paths: list[str] = Field(default_factory=list, description="Paths of newly indexed images, same order as added.")
    replaced: list[int] = Field(default_factory=list, description="Old ids retired because their file changed.")
    unchanged: int = Field(0, description="Files already indexed with identical content.")
    skipped: list[SkippedItem] = Field(default_factory=list, description="Files not indexed, with the reason.")
    removed_missing: list[int] = Field(default_factory=list, description="Ids removed because their file vanished.")
    merged: bool = Field(False, description="Whether the buffer was merged into the main index afterwards.")
    cancelled: bool = Field(False, description="True when the caller cancelled; everything listed as added is kept.")
    job: JobInfo | None = Field(
        None, description="The background job doing the add, when the call did not wait for it to finish: the counts "
        "above are what it had done then; index_status lists it with its progress and, once done, its report.",
    )


class RemoveReport(BaseModel):
    removed: list[int] = Field(default_factory=list, description="Ids now removed (invisible to search).")
    already_removed: list[int] = Field(
        default_factory=list, description="Ids that were removed before this call (removing again changes nothing)."
    )
    not_found: list[str] = Field(
        default_factory=list, description="Ids that never named an image, or paths that match no live image."
    )
    dry_run: bool = Field(False, description="True: nothing was removed; 'removed' lists what would be.")


class MaintenanceReport(BaseModel):
    operation: Literal["merge", "rebuild"]
    moved: int = Field(description="Vectors written into the new main index generation.")
    dropped: int = Field(0, description="Deleted vectors physically removed (rebuild only).")
    generation: int = Field(description="Generation of the main index file after the operation.")
    index: str = Field(description="Main index description after the operation.")
    seconds: float
    retrained: bool = Field(description="Whether a quantizer was (re)trained.")
    saved: bool = Field(False, description="Whether a new index file was written (merges write one now and then).")
    cancelled: bool = Field(False, description=(
        "Whether a rebuild was stopped before its new index replaced the old one (then nothing changed)."))


class IndexStatus(BaseModel):
    live: int = Field(description="Searchable images.")
    main: int = Field(description="Live images in the main index.")
    buffer: int = Field(description="Live images in the exact buffer, not yet merged.")
    deleted: int = Field(description="Removed images still physically in the main index (dropped by rebuild).")
    index: str = Field(description="Main index description, e.g. 'Flat' or 'IVF1024,SQ8'.")
    index_string: str = Field(description="Configured index string ('auto' or a faiss factory string).")
    trained: bool = Field(description="Whether the main index carries a trained quantizer.")
    nlist: int | None = Field(None, description="IVF lists (None for non-IVF).")
    nprobe: int | None = Field(None, description="IVF lists probed per query (None for non-IVF).")
    rerank_candidates: int | None = Field(None, description="Candidates re-ranked exactly per 10 results, for compressed codes.")
    segments: int = Field(0, description="Merged segments searched beside the main index until they are compacted into it.")
    tuned_recall: float | None = Field(
        None, description="Recall@10 of the search setting, measured on held-out queries when the index was trained.")
    recall_target: float | None = Field(None, description="Recall@10 the search setting was tuned to reach.")
    tuning: str | None = Field(None, description="The measured search setting in words (None before an index is trained).")
    model: str
    pretrained: str
    dim: int
    generation: int = Field(description="Generation of the main index file (0 = none yet).")
    unsaved: int = Field(0, description="Merged vectors not yet in the index file (re-added from the vector store at open).")
    bytes_on_disk: int
    data_dir: str
    merge_threshold: int
    last_merge: float | None = Field(None, description="Unix time of the last merge.")
    last_rebuild: float | None = Field(None, description="Unix time of the last rebuild.")
    hints: list[str] = Field(default_factory=list, description="Advice, e.g. that a merge or rebuild is due.")
    merge_advised: bool = Field(False, description="Whether merge_buffer is due (the buffer reached its threshold).")
    rebuild_advised: bool = Field(False, description="Whether rebuild_index is due (many removals, or outgrown).")
    jobs: list[JobInfo] = Field(default_factory=list, description="Indexing jobs, running and recent, with their progress.")
    read_only: bool = Field(False, description="Whether the store is read-only (searches work, changes are refused).")
    vector_store: str = Field("faiss", description="Where the vectors are searched: 'faiss' or the Milvus URI.")


class MigrateReport(BaseModel):
    """A move of a store's vectors between the faiss engine and Milvus (``img-agent migrate``)."""

    source: str = Field(description="Where the vectors were searched before: 'faiss' or a Milvus URI.")
    target: str = Field(description="Where they are searched now (unless cancelled).")
    images: int = Field(0, description="Live images in the store.")
    copied: int = Field(0, description="Images copied by this run (a resumed run copies only the rest).")
    resumed_from: int = Field(0, description="First id this run copied (0: from the start; more: it resumed).")
    index: str = Field("", description="The target's index after the move.")
    cancelled: bool = Field(False, description="Stopped before the switch; run again to resume.")
    seconds: float = 0.0


class BackupReport(BaseModel):
    """A consistent copy of a store, taken under its write lock."""

    dest: str = Field(description="Folder holding the copy (a data directory of its own).")
    images: int = Field(description="Live images in the copy.")
    rows: int = Field(description="Vectors copied (live and removed ones: ids stay dense).")
    generation: int = Field(description="Main index generation copied (0 = none).")
    bytes: int = Field(description="Bytes written.")
    seconds: float


class DoctorFinding(BaseModel):
    """One thing ``img-agent doctor`` found."""

    severity: Literal["error", "warning", "info"]
    what: str = Field(description="What was found.")
    fix: str | None = Field(None, description="What to do about it.")


class DoctorReport(BaseModel):
    """The read-only diagnosis of a data directory."""

    data_dir: str
    ok: bool = Field(description="True when nothing is wrong (no errors).")
    findings: list[DoctorFinding] = Field(default_factory=list)


class RepairReport(BaseModel):
    """What ``img-agent repair`` did."""

    data_dir: str
    actions: list[str] = Field(default_factory=list, description="What was done, in order.")
    lost_and_found: str | None = Field(None, description="Folder the damaged or orphaned files were moved to.")
    removed_ids: list[int] = Field(default_factory=list, description="Images removed because their vector was lost.")
    reindex: list[str] = Field(default_factory=list, description="Files of those images: index them again.")
    remaining: list[DoctorFinding] = Field(default_factory=list, description="Problems repair could not fix.")
