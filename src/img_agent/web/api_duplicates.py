"""Near-duplicate images: ``/api/duplicates`` runs the ``find_duplicates`` tool (read-only).

GET takes the tool's arguments as query parameters, POST as a JSON body; both use the tool's own
arguments model and spec, so limits and messages are the tool's. Removing the extras is
``/api/index/remove`` with their ids.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from img_agent.index.duplicates import DuplicatesReport
from img_agent.tools.image_tools import get_spec
from img_agent.web.deps import Deps, call_tool

router = APIRouter()

DuplicatesArguments = get_spec("find_duplicates").arguments_model()


@router.get("/api/duplicates", tags=["store"])
def duplicates_get(deps: Deps, query: Annotated[DuplicatesArguments, Query()]) -> DuplicatesReport:  # type: ignore[valid-type]
    """Groups of near-duplicate images, largest first, each with its suggested keeper."""
    return call_tool(deps.tools(), "find_duplicates", query.model_dump())


@router.post("/api/duplicates", tags=["store"])
def duplicates_post(deps: Deps, body: DuplicatesArguments | None = None) -> DuplicatesReport:  # type: ignore[valid-type]
    """The same, with the arguments as a JSON body (none or ``{}`` = the defaults)."""
    return call_tool(deps.tools(), "find_duplicates", body.model_dump() if body is not None else {})
