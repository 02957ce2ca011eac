"""The note tools: tags and descriptions of indexed images, and descriptions written by the configured LLM.

:class:`NoteTools` is a base of :class:`~img_agent.tools.image_tools.ImageTools`; it uses the
engine's :class:`~img_agent.index.notes.Notes` (the store side: tag rule, one transaction per call,
removed images refused). Ids and paths are confined like removals: a path must lie inside the
allowed folders (a folder path names every image indexed under it), and so must the recorded path
of every id. Thumbnails for the LLM are read inside the sandbox.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field

from img_agent.errors import AccessDeniedError, ImgAgentError, InvalidInputError, LLMError, LLMNotConfiguredError, NotFoundError
from img_agent.index.failures import read_only
from img_agent.index.notes import MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, NoteReport, TagCount
from img_agent.results import JobInfo, ProgressCallback
from img_agent.tools.limits import MAX_IDS_PER_CALL, PROGRESS_POLL_S
from img_agent.tools.spec import INJECTED, tool

if TYPE_CHECKING:
    from img_agent.agent.llm import LLMClient
    from img_agent.index.engine import Engine
    from img_agent.tools.confined import ConfinedImages
    from img_agent.tools.jobs import JobRegistry
    from img_agent.tools.sandbox import Sandbox

MAX_TAGS_PER_CALL = 100
"""Most tags one call may add, remove or set."""
DEFAULT_DESCRIBE_LIMIT = 20
MAX_DESCRIBE_LIMIT = 200
"""Most images one describe_images call sends to the LLM."""
MAX_FAILURES_IN_A_ROW = 3
"""describe_images stops after this many LLM failures in a row (the LLM is down, not one image bad)."""
DEFAULT_TAG_LIST = 200
MAX_TAG_LIST = 5000

NO_LLM_MESSAGE = (
    "describe_images needs a multimodal LLM, and none is configured: set LLM_BASE_URL and/or LLM_API_KEY and "
    "LLM_MODEL (a model that takes images) in the environment or .env, or pass --llm-base-url / --llm-model."
)

Ids = Annotated[list[int] | None, Field(
    max_length=MAX_IDS_PER_CALL, description="Ids of images (from search results); null = none.")]
Paths = Annotated[list[Annotated[str, Field(max_length=4096)]] | None, Field(
    max_length=MAX_IDS_PER_CALL,
    description="Indexed file paths; a folder path names every image indexed under it. null = none.")]
Tags = list[Annotated[str, Field(max_length=4 * MAX_TAG_CHARS)]]


class TagList(BaseModel):
    """The tags of the collection, most used first."""

    tags: list[TagCount] = Field(description="Tags with the number of live images carrying each, most used first.")
    total_tags: int = Field(description="Distinct tags in the collection (the list may show fewer).")
    images_without_description: int = Field(description="Live images that have no description yet.")


class DescribeFailure(BaseModel):
    id: int = Field(description="Image id.")
    reason: str = Field(description="Why it got no description.")


class DescribeReport(BaseModel):
    """What describe_images did."""

    described: list[int] = Field(default_factory=list, description="Ids that got a new description.")
    failed: list[DescribeFailure] = Field(default_factory=list, description="Ids that got none, with the reason.")
    not_found: list[str] = Field(default_factory=list, description="Ids or paths that match no live image.")
    remaining: int | None = Field(
        None, description="Images of the selection still without a description (call again to go on).")
    cancelled: bool = Field(False, description="True when the job was cancelled; what was written stays.")
    job: JobInfo | None = Field(None, description="The background job, when the call returned before it finished.")
    notes: list[str] = Field(default_factory=list, description="Things worth knowing about this run.")


class NoteTools:
    """Tags and descriptions; mixed into :class:`~img_agent.tools.image_tools.ImageTools`."""

    engine: Engine
    sandbox: Sandbox
    images: ConfinedImages
    llm: LLMClient | None
    jobs: JobRegistry

    @tool(title="Tag images", read_only=False, destructive=False, idempotent=True)
    def tag_images(
        self,
        ids: Ids = None,
        paths: Paths = None,
        add: Annotated[Tags | None, Field(
            max_length=MAX_TAGS_PER_CALL, description="Tags to add, e.g. ['beach', 'Family']; null = none.")] = None,
        remove: Annotated[Tags | None, Field(
            max_length=MAX_TAGS_PER_CALL, description="Tags to take away (in any case); null = none.")] = None,
        replace: Annotated[Tags | None, Field(
            max_length=MAX_TAGS_PER_CALL,
            description="Set each image's tags to exactly these first ([] removes every tag); null = keep them.")] = None,
    ) -> NoteReport:
        """Add, remove or set the tags of many images at once (tags help people find and filter images).

        A tag has 1-64 characters (spaces trimmed and collapsed) and keeps the case first given; tags
        compare case-insensitively, so an image never holds 'beach' and 'Beach' both. Order: replace,
        then remove, then add. Give ids, paths, or both; only images inside the allowed folders can be
        changed. The report lists the ids changed, unchanged, and the ids or paths not found.
        """
        targets, not_found = self._note_targets(ids, paths)
        report = self.engine.notes.edit_tags(targets, add=add or (), remove=remove or (), replace=replace,
                                             skip_missing=True)
        return report.model_copy(update={"not_found": report.not_found + not_found})

    @tool(title="Set or clear image descriptions", read_only=False, destructive=False, idempotent=True)
    def set_description(
        self,
        ids: Ids = None,
        paths: Paths = None,
        description: Annotated[str | None, Field(
            max_length=MAX_DESCRIPTION_CHARS,
            description=f"The description to give every named image (1-{MAX_DESCRIPTION_CHARS} characters); "
            "null = none (then clear must be true).")] = None,
        clear: Annotated[bool, Field(description="Remove the description instead (description must be null).")] = False,
    ) -> NoteReport:
        """Set (or clear) the free-text description of images. Descriptions show in search results and help
        answer questions. Give ids, paths, or both; only images inside the allowed folders can be changed."""
        if (description is None) == (not clear):
            raise InvalidInputError("Give either a description or clear=true (not both, not neither).")
        targets, not_found = self._note_targets(ids, paths)
        report = self.engine.notes.set_description(targets, description, skip_missing=True)
        return report.model_copy(update={"not_found": report.not_found + not_found})

    @tool(title="List tags", read_only=True, destructive=False, idempotent=True)
    def list_tags(
        self,
        limit: Annotated[int | None, Field(
            ge=1, le=MAX_TAG_LIST, description=f"Most tags to list (1-{MAX_TAG_LIST}); null = {DEFAULT_TAG_LIST}.")] = None,
    ) -> TagList:
        """The tags in use, each with the number of images carrying it, most used first (then by name), and how
        many images still have no description."""
        counts = self.engine.notes.tag_counts()
        return TagList(tags=counts[: limit or DEFAULT_TAG_LIST], total_tags=len(counts),
                       images_without_description=len(self.engine.notes.to_describe()))

    @tool(title="Describe images with the LLM", read_only=False, destructive=False, idempotent=False, uses_llm=True,
          costly=True)
    def describe_images(
        self,
        ids: Ids = None,
        paths: Paths = None,
        limit: Annotated[int | None, Field(
            ge=1, le=MAX_DESCRIBE_LIMIT,
            description=f"Most images to describe in this call (1-{MAX_DESCRIBE_LIMIT}); null = {DEFAULT_DESCRIBE_LIMIT}.",
        )] = None,
        overwrite: Annotated[bool, Field(
            description="Also describe images that have a description already (it is replaced).")] = False,
        wait: Annotated[bool, Field(
            description="Wait until done (true), or return at once with the job's id and progress (false; follow "
            "it with index_status, stop it with cancel_job).")] = True,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> DescribeReport:
        """Write descriptions of images with the configured multimodal LLM, which looks at each thumbnail.

        Takes the images without a description (all of them with overwrite) among the ids and paths given,
        or in the whole collection when none are given, lowest id first, at most limit per call; call again
        to continue ('remaining' says how many are left). Runs as a job; cancel_job stops it, keeping the
        descriptions written so far.
        """
        llm = self.llm
        if llm is None:
            raise LLMNotConfiguredError(NO_LLM_MESSAGE)
        if self.engine.read_only:
            raise read_only(self.engine.data_dir)
        among: list[int] | None = None
        not_found: list[str] = []
        if ids or paths:
            among, not_found = self._note_targets(ids, paths)
        count = limit or DEFAULT_DESCRIBE_LIMIT
        targets = self.engine.notes.to_describe(among, limit=count, overwrite=overwrite)
        if not targets:
            none = "Every selected image has a description already; pass overwrite to write new ones."
            return DescribeReport(not_found=not_found, remaining=0, notes=[none])

        def work(job_progress: ProgressCallback, job_cancel: threading.Event) -> DescribeReport:
            report = _describe(self, llm, targets, job_progress, job_cancel)
            remaining = len(self.engine.notes.to_describe(among))
            return report.model_copy(update={"not_found": not_found, "remaining": remaining})

        job_id = self.jobs.start("describe", f"describe {len(targets)} image(s)", work)
        info, report = self.jobs.follow(job_id, wait=wait, progress=progress, cancel=cancel, poll=PROGRESS_POLL_S)
        return report if isinstance(report, DescribeReport) else DescribeReport(not_found=not_found, job=info)

    # -- helpers -------------------------------------------------------------------------------

    def _note_targets(self, ids: Sequence[int] | None, paths: Sequence[str] | None) -> tuple[list[int], list[str]]:
        """(ids of the images named by ``ids`` and ``paths``, the paths that match no live image).

        Raises:
            InvalidInputError: neither ids nor paths.
            AccessDeniedError: a path, or a live id's file, outside the allowed folders (nothing changes).
            NotFoundError: nothing named matches a live image.
        """
        ids, paths = list(ids or ()), list(paths or ())
        if not ids and not paths:
            raise InvalidInputError("Give the ids and/or paths of the images.")
        refused: list[str] = []
        resolved: list[str] = []
        if self.sandbox.confines:
            for raw in paths:
                try:
                    resolved.append(str(self.sandbox.confine(raw)))
                except AccessDeniedError:
                    refused.append(repr(raw))
            records = self.engine.catalog.records(ids) if ids else {}
            refused += [f"id {i}" for i in ids if i in records and not self.sandbox.allows_indexed(records[i].path)]
        else:
            resolved = paths
        if refused:
            raise AccessDeniedError(
                f"Refused for {', '.join(refused[:20])}{' ...' if len(refused) > 20 else ''}: outside the "
                f"{self.sandbox.describe_roots()}. Name only images inside them (nothing was changed)."
            )
        under, not_found = self.engine.notes.ids_for_paths(resolved)
        if not ids and not under:
            raise NotFoundError(f"No live image is indexed at or under {', '.join(not_found[:20])}. Give indexed file "
                                "or folder paths, or ids from search results.")
        return sorted(set(ids) | set(under)), not_found


def _describe(tools: NoteTools, llm: LLMClient, targets: list[int], progress: ProgressCallback,
              cancel: threading.Event) -> DescribeReport:
    """Describe ``targets`` one by one, each description committed as soon as it is written."""
    from img_agent.agent.describe import DESCRIBE_THUMB_SIDE, VisionRequiredError, describe_image

    report = DescribeReport()
    in_a_row = 0
    for done, image_id in enumerate(targets):
        if cancel.is_set():
            report.cancelled = True
            break
        progress(done, len(targets), f"image {image_id}")
        try:
            [record] = tools.engine.get([image_id])
            thumbnail = tools.images.thumbnail(image_id, max_side=DESCRIBE_THUMB_SIDE)
            text = describe_image(llm, thumbnail, PurePath(record.path).name, max_chars=MAX_DESCRIPTION_CHARS)
        except VisionRequiredError as exc:
            report.notes.append(f"Stopped: {exc}")
            break
        except LLMError as exc:
            report.failed.append(DescribeFailure(id=image_id, reason=str(exc)))
            in_a_row += 1
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                report.notes.append(f"Stopped after {in_a_row} LLM failures in a row; check the LLM and call again.")
                break
            continue
        except ImgAgentError as exc:  # removed meanwhile, file gone, outside the allowed folders, not an image
            report.failed.append(DescribeFailure(id=image_id, reason=str(exc)))
            continue
        in_a_row = 0
        try:
            tools.engine.notes.set_description([image_id], text)
        except NotFoundError:
            report.failed.append(DescribeFailure(id=image_id, reason="removed while it was being described"))
        else:
            report.described.append(image_id)
    progress(len(report.described) + len(report.failed), len(targets), "cancelled" if report.cancelled else "done")
    return report
