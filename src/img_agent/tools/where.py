"""A search's ``where`` filter as the tools take it: its folder confined to the sandbox, its values checked.

A relative ``folder`` is looked up under each allowed folder in turn (the first where it exists, else
taken under the first); absolute or relative, it is resolved (symbolic links, ``..``) and refused
unless it lies inside the allowed folders, with a message naming them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from img_agent.errors import NotFoundError
from img_agent.results import SearchFilter
from img_agent.tools.sandbox import Sandbox

Where = Annotated[SearchFilter | None, Field(
    description="Only search images that meet these conditions, all of them (AND): folder, glob, formats, "
    "taken/modified dates, camera, GPS (has_gps, bbox), minimum size, tags, description text, and min_score "
    "(drops weaker results). Leave a condition null to not use it; null = all images.",
)]

NO_MATCH_NOTE = "No indexed image meets the 'where' conditions; loosen or drop them."
"""The note a search gets when its filter left nothing."""


def confine_where(sandbox: Sandbox, where: SearchFilter | None) -> SearchFilter | None:
    """``where`` with its folder absolute and inside the sandbox, checked; None when it sets no condition.

    Raises:
        AccessDeniedError: the folder lies outside the allowed folders (the message names them).
        InvalidInputError: a bad date, range or format (see :func:`img_agent.index.filters.check`).
    """
    from img_agent.index.filters import check

    if where is None or not where.active:
        return None
    if where.folder is not None:
        try:
            folder = sandbox.resolve(where.folder)
        except NotFoundError:  # nothing there now: images indexed from it may still be in the index
            folder = sandbox.confine(where.folder)
        where = where.model_copy(update={"folder": str(folder)})
    check(where)
    return where
