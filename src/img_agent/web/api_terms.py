"""Combined search over REST: ``POST /api/search/combined`` runs the ``search_combined`` tool.

The body is the tool's own argument model (``terms``, ``k``, ``where``), so limits, guards and messages
are the tool's; the answer is its :class:`~img_agent.tools.shapes.SearchResult`.
"""

from __future__ import annotations

from fastapi import APIRouter

from img_agent.tools.image_tools import get_spec
from img_agent.tools.shapes import SearchResult
from img_agent.web.deps import Deps, call_tool

router = APIRouter()

CombinedArguments = get_spec("search_combined").arguments_model()


@router.post("/api/search/combined", tags=["search"])
def search_combined(body: CombinedArguments, deps: Deps) -> SearchResult:  # type: ignore[valid-type]
    """Search with weighted text and image terms, e.g. ``{"terms": [{"text": "a golden retriever", "weight": 2},
    {"image_id": 7}, {"text": "fruit", "weight": -1}], "k": 10}``: the query is the normalised weighted sum of
    the terms' unit vectors; a positive ``image_id`` term leaves that image out of the results."""
    return call_tool(deps.tools(), "search_combined", body.model_dump(mode="json"))  # type: ignore[attr-defined]
