"""Indexed images by id: their record, thumbnail, file and removal; never a path from the request.

Thumbnails and files are read through the web client's sandbox: an image whose file lies outside
the allowed folders is refused (403) even though the catalog lists it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from img_agent.errors import NotFoundError
from img_agent.results import RemoveReport
from img_agent.web.deps import Deps, call_tool
from img_agent.web.models import ImageInfo
from img_agent.web.thumbs import CACHE_CONTROL, DEFAULT_SIDE, MAX_SIDE, MIN_SIDE, checked_record, etag, etag_matches

router = APIRouter(tags=["images"])

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp",
               "TIFF": "image/tiff", "WEBP": "image/webp", "MPO": "image/jpeg", "HEIF": "image/heif",
               "AVIF": "image/avif"}
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, no-cache"}


@router.get("/api/images/{image_id}")
def image(image_id: int, deps: Deps) -> ImageInfo:
    """An indexed image's catalog record, with its thumbnail and file URLs."""
    [record] = deps.tools().engine.get([image_id])
    return ImageInfo(**record.model_dump(), thumbnail_url=f"/api/images/{image_id}/thumbnail",
                     file_url=f"/api/images/{image_id}/file")


@router.get("/api/images/{image_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}})
def thumbnail(image_id: int, request: Request, deps: Deps,
              size: Annotated[int, Query(ge=MIN_SIDE, le=MAX_SIDE)] = DEFAULT_SIDE) -> Response:
    """A JPEG thumbnail (longest side ``size``), cached on disk; ``If-None-Match`` gives 304."""
    tools = deps.tools()
    record = checked_record(tools, image_id)
    tag = etag(record, size)
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(deps.thumbs.get(tools, record, size), media_type="image/jpeg", headers=headers)


@router.get("/api/images/{image_id}/file", response_class=Response, responses={200: {"content": {"image/*": {}}}})
def image_file(image_id: int, deps: Deps) -> Response:
    """The original file's bytes, read inside the allowed folders."""
    tools = deps.tools()
    record = checked_record(tools, image_id)
    _, data = tools.sandbox.read_file(record.path)
    media = MEDIA_TYPES.get((record.format or "").upper(), "application/octet-stream")
    return Response(data, media_type=media, headers=FILE_HEADERS)


@router.delete("/api/images/{image_id}")
def remove_image(image_id: int, deps: Deps) -> RemoveReport:
    """Remove one image from the index (its file is never touched)."""
    tools = deps.tools()
    tools.engine.get([image_id])  # an unknown id is a 404, not an empty report
    report = call_tool(tools, "remove_images", {"ids": [image_id]})
    if not report.removed and report.not_found:
        raise NotFoundError(f"No live image has id {image_id}. Use ids from search results.")
    return report
