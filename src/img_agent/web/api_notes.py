"""Tags and descriptions: list the tags, change tags and descriptions, have the LLM describe images.

Each endpoint runs its tool (the body is the tool's own arguments model): ``POST /api/images/describe``
with ``"wait": false`` answers at once with the job (follow it at ``/api/jobs/{id}``).
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from img_agent.index.notes import NoteReport
from img_agent.tools.image_tools import get_spec
from img_agent.tools.note_tools import MAX_TAG_LIST, DescribeReport, TagList
from img_agent.web.deps import Deps, call_tool

router = APIRouter()

TagArguments = get_spec("tag_images").arguments_model()
DescriptionArguments = get_spec("set_description").arguments_model()
DescribeArguments = get_spec("describe_images").arguments_model()


@router.get("/api/tags", tags=["notes"])
def tags(deps: Deps, limit: int | None = Query(None, ge=1, le=MAX_TAG_LIST)) -> TagList:
    """The tags in use with their image counts, most used first."""
    return call_tool(deps.tools(), "list_tags", {"limit": limit})


@router.post("/api/images/tags", tags=["notes"])
def tag_images(body: TagArguments, deps: Deps) -> NoteReport:  # type: ignore[valid-type]
    """Add, remove or replace the tags of images named by id and/or path."""
    return call_tool(deps.tools(), "tag_images", body.model_dump())


@router.post("/api/images/description", tags=["notes"])
def set_description(body: DescriptionArguments, deps: Deps) -> NoteReport:  # type: ignore[valid-type]
    """Set (or, with ``clear``, remove) the description of images named by id and/or path."""
    return call_tool(deps.tools(), "set_description", body.model_dump())


@router.post("/api/images/describe", tags=["llm"])
def describe(body: DescribeArguments, deps: Deps) -> DescribeReport:  # type: ignore[valid-type]
    """Have the configured LLM describe images without a description; ``wait: false`` returns the job at once."""
    return call_tool(deps.tools(), "describe_images", body.model_dump())
