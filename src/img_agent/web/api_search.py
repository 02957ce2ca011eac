"""Searching: text, example image (upload or base64), more-like-this, the LLM recipes and chat.

Every search runs a tool (``search_by_text``, ``search_by_image``) through its spec, so limits,
guards and messages are the tools' own; pages are cut from one ranking ``offset + k + 1`` deep.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.datastructures import UploadFile as FormFile

from img_agent.agent.chat import ChatSession
from img_agent.agent.expand import expand_query_detailed
from img_agent.agent.qa import QAResult
from img_agent.agent.rag import RagResult
from img_agent.agent.recipes import QARequest, RagRequest
from img_agent.errors import InvalidInputError, ModelLoadingError
from img_agent.results import MAX_TOPK
from img_agent.tools.image_tools import TOOL_SPECS, ImageTools
from img_agent.tools.openai_tools import chat_completions_tools, dispatch
from img_agent.tools.shapes import SearchResult, ToolHit
from img_agent.tools.where import confine_where
from img_agent.web.deps import Deps, WebDeps, call_tool
from img_agent.web.errors import RequestTooLargeError
from img_agent.web.models import (
    PAGE_K,
    ChatMessage,
    ChatReply,
    ChatRequest,
    ExpandRequest,
    ExpandResult,
    ImageSearchRequest,
    Paging,
    SearchPage,
    SearchRequest,
)

router = APIRouter()

WEB_CHAT_REFUSAL = ("Not run: removals are never made from the web chat (a text in the collection could ask for "
                    "them). Tell the user to confirm removals in the gallery.")
"""What the chat model gets for a destructive tool call."""
DESTRUCTIVE = frozenset(spec.name for spec in TOOL_SPECS if spec.hints.destructive)


def depth(offset: int, k: int) -> int:
    """How deep to rank for one page (one more than the page, to know whether another follows)."""
    return min(offset + k + 1, MAX_TOPK)


def page(hits: list[ToolHit], offset: int, k: int, **extra: object) -> SearchPage:
    return SearchPage(hits=hits[offset:offset + k], offset=offset, k=k, has_more=len(hits) > offset + k, **extra)


def _result_page(result: SearchResult, offset: int, k: int) -> SearchPage:
    return page(result.hits, offset, k, notes=result.notes)


def _ready(deps: WebDeps) -> None:
    """Recipes need the model before their LLM calls (they must not be retried half-way)."""
    if deps.model().state == "loading":
        raise ModelLoadingError("The CLIP model is still loading; retry in a few seconds.")


@router.post("/api/search", tags=["search"])
def search(body: SearchRequest, deps: Deps) -> SearchPage:
    """Text search, one page (``expand``: LLM variants fused, with an explanation on the first page)."""
    tools = deps.tools()
    if body.expand:
        _ready(deps)
        recipe = RagRequest(query=body.query, k=depth(body.offset, body.k), explain=body.offset == 0,
                            where=confine_where(tools.sandbox, body.where))
        rag = recipe.run(tools.images, tools.llm)
        hits = [ToolHit.model_validate(hit.model_dump()) for hit in rag.results]
        return page(hits, body.offset, body.k, expanded_queries=rag.expanded_queries,
                    explanation=rag.ai_explanation, notes=rag.notes)
    result = call_tool(tools, "search_by_text", {"query": body.query, "k": depth(body.offset, body.k),
                                                 "where": body.where, "collapse_duplicates": body.collapse_duplicates})
    return _result_page(result, body.offset, body.k)


def _image_page(tools: ImageTools, data: bytes, offset: int, k: int, where: object = None) -> SearchPage:
    encoded = base64.b64encode(data).decode("ascii")
    result = call_tool(tools, "search_by_image", {"image_base64": encoded, "k": depth(offset, k), "where": where})
    return _result_page(result, offset, k)


async def _upload_bytes(upload: FormFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise RequestTooLargeError(f"The uploaded image is larger than {limit // (1024 * 1024)} MiB; send a smaller "
                                   "one (downscale it: CLIP looks at a few hundred pixels).")
    if not data:
        raise InvalidInputError("The uploaded file is empty; send a JPEG, PNG or WebP image.")
    return data


_IMAGE_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}, "k": {"type": "integer"}, "offset": {"type": "integer"},
        "where": {"type": "string", "description": "The search filter as JSON text (see SearchFilter)."}}}},
    "application/json": {"schema": ImageSearchRequest.model_json_schema()},
}}}


def _form_where(text: object, field: str = "form field") -> object:
    """A ``where`` sent as JSON text (a form field or a query parameter) as data for the tool, which validates
    and confines it; None when absent or blank."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInputError(f"The {field} 'where' is not valid JSON; send the filter as a JSON object, e.g. "
                                '{"folder": "/photos/2024", "formats": ["JPEG"]}.') from None


@router.post("/api/search/image", tags=["search"], openapi_extra=_IMAGE_BODY)
async def search_image(request: Request, deps: Deps) -> SearchPage:
    """Search by an example image: a multipart upload (field ``image``) or JSON with ``image_base64``."""
    tools = deps.tools()
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        upload = form.get("image")
        if not isinstance(upload, FormFile):
            raise InvalidInputError("Send the image as the multipart file field 'image'.")
        data = await _upload_bytes(upload, deps.max_upload)
        body = Paging.model_validate({key: form[key] for key in ("k", "offset") if key in form})
        where = _form_where(form.get("where"))
        return await anyio.to_thread.run_sync(lambda: _image_page(tools, data, body.offset, body.k, where))
    try:
        raw = json.loads(await request.body() or b"null")
    except ValueError:
        raise InvalidInputError("The request body is not valid JSON; send {\"image_base64\": ...} or a multipart "
                                "upload with the file field 'image'.") from None
    body = ImageSearchRequest.model_validate(raw)
    if len(body.image_base64) * 3 // 4 > deps.max_upload + 1024:
        raise RequestTooLargeError(f"image_base64 decodes to more than {deps.max_upload // (1024 * 1024)} MiB; "
                                   "send a smaller image.")
    arguments = {"image_base64": body.image_base64, "k": depth(body.offset, body.k), "where": body.where,
                 "collapse_duplicates": body.collapse_duplicates}
    result = await anyio.to_thread.run_sync(lambda: call_tool(tools, "search_by_image", arguments))
    return _result_page(result, body.offset, body.k)


@router.post("/search", tags=["compatibility"])
async def seed_search(deps: Deps, query: Annotated[str | None, Form()] = None,
                      image: Annotated[UploadFile | None, File()] = None,
                      k: Annotated[int, Form(ge=1, le=MAX_TOPK)] = PAGE_K) -> SearchPage:
    """The original ``/search`` form: text ``query`` or an ``image`` file, and ``k``."""
    tools = deps.tools()
    if image is not None and image.filename:
        data = await _upload_bytes(image, deps.max_upload)
        return await anyio.to_thread.run_sync(lambda: _image_page(tools, data, 0, k))
    if not query or not query.strip():
        raise InvalidInputError("Send a text 'query' or an 'image' file.")
    result = await anyio.to_thread.run_sync(lambda: call_tool(tools, "search_by_text", {"query": query, "k": depth(0, k)}))
    return _result_page(result, 0, k)


_WHERE_PARAM = Query(max_length=32768, description=(
    'The search filter as JSON text (see SearchFilter), URL-encoded, e.g. {"formats": ["PNG"], "has_gps": true}.'))


@router.get("/api/images/{image_id}/similar", tags=["search"])
def similar(image_id: int, deps: Deps, k: int = PAGE_K, offset: int = 0,
            where: Annotated[str | None, _WHERE_PARAM] = None) -> SearchPage:
    """More like this: images like an indexed one, without itself (``where``: only images meeting the filter)."""
    if not 1 <= k <= MAX_TOPK or not 0 <= offset < MAX_TOPK:
        raise InvalidInputError(f"k must be 1-{MAX_TOPK} and offset 0-{MAX_TOPK - 1}.")
    arguments = {"image_id": image_id, "k": depth(offset, k), "where": _form_where(where, "query parameter")}
    result = call_tool(deps.tools(), "search_by_image", arguments)
    return _result_page(result, offset, k)


@router.post("/api/search/rag", tags=["llm"])
def search_rag(body: RagRequest, deps: Deps) -> RagResult:
    """LLM-assisted search: query variants, fused retrieval, an explanation (plain search without an LLM)."""
    return _run_recipe(body, deps)


@router.post("/api/search/expand", tags=["llm"])
def search_expand(body: ExpandRequest, deps: Deps) -> ExpandResult:
    """The query variants the LLM writes for a query (no search)."""
    expansion = expand_query_detailed(deps.tools().llm, body.query, body.variants)
    return ExpandResult(original_query=body.query, expanded_queries=expansion.queries, notes=expansion.notes)


@router.post("/api/rag/qa", tags=["llm"])
def rag_qa(body: QARequest, deps: Deps) -> QAResult:
    """Answer a question from the most relevant images, citing them."""
    return _run_recipe(body, deps)


def _run_recipe(body: RagRequest | QARequest, deps: WebDeps) -> RagResult | QAResult:
    """Run an LLM recipe over the tools' images, its filter confined to the allowed folders."""
    _ready(deps)
    tools = deps.tools()
    return body.model_copy(update={"where": confine_where(tools.sandbox, body.where)}).run(tools.images, tools.llm)


@router.post("/api/chat", tags=["llm"])
def chat(body: ChatRequest, deps: Deps) -> ChatReply:
    """One chat turn with tool use; removals are never run from here (see WEB_CHAT_REFUSAL)."""
    tools = deps.tools()
    *history, last = body.messages
    if last.role != "user":
        raise InvalidInputError("The last message must be the user's.")

    def run(name: str, arguments: str) -> str:
        if name in DESTRUCTIVE:
            return json.dumps({"error": WEB_CHAT_REFUSAL})
        return dispatch(tools, name, arguments)

    session = ChatSession(tools.llm, chat_completions_tools(), run)
    session.extend_history([m.model_dump() for m in history])
    turn = session.send(last.content)
    messages = [*body.messages, ChatMessage(role="assistant", content=turn.answer)]
    return ChatReply(reply=turn.answer, messages=messages, tool_calls=turn.tool_calls, notes=turn.notes)
