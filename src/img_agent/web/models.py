"""The REST API's own request and response models; everything else is the tools' and the recipes' models.

Tool calls take the tool's argument model as their body (``get_spec(name).arguments_model()``) and
answer with the tool's result model, so nothing here restates a tool parameter or a result field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from img_agent.agent.chat import ToolCallRecord
from img_agent.agent.expand import DEFAULT_VARIANTS, MAX_VARIANTS
from img_agent.results import MAX_TOPK, ImageRecord, IndexStatus, JobInfo
from img_agent.tools.limits import MAX_QUERY_CHARS
from img_agent.tools.shapes import CollapseDuplicates, ToolHit
from img_agent.tools.where import Where

PAGE_K = 40
"""Results per page unless the request says."""
MAX_CHAT_MESSAGES = 100
MAX_CHAT_MESSAGE_CHARS = 20_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


PageK = Field(PAGE_K, ge=1, le=MAX_TOPK, description=f"Results per page (1-{MAX_TOPK}).")
Offset = Field(0, ge=0, lt=MAX_TOPK, description="How many results of the ranking to skip (for 'load more').")


class Paging(_Request):
    """Which page of a ranking."""

    k: int = PageK
    offset: int = Offset


class SearchRequest(Paging):
    """A text search, one page of it."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What the images should show.")
    where: Where = None
    collapse_duplicates: CollapseDuplicates = False
    expand: bool = Field(False, description="LLM query variants, fused, with an explanation (needs an LLM).")


class ImageSearchRequest(Paging):
    """A search by an example image sent as base64 (JPEG, PNG or WebP; a data: URL is accepted)."""

    image_base64: str = Field(min_length=1, description="The image file's bytes, base64-encoded.")
    where: Where = None
    collapse_duplicates: CollapseDuplicates = False


class SearchPage(BaseModel):
    """One page of a ranking, best first."""

    hits: list[ToolHit]
    offset: int
    k: int
    has_more: bool = Field(description="Whether a further page exists.")
    expanded_queries: list[str] | None = Field(None, description="With expand: every query searched, the original first.")
    explanation: str | None = Field(None, description="With expand and an LLM: why these images match.")
    notes: list[str] = Field(default_factory=list)


class ImageInfo(ImageRecord):
    """An indexed image, with where to fetch its thumbnail and its file."""

    thumbnail_url: str
    file_url: str


class JobStarted(BaseModel):
    """A job started in the background; follow it at ``/api/jobs/{id}`` or ``/api/jobs/{id}/events``."""

    job: JobInfo


class ExpandRequest(_Request):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    variants: int = Field(DEFAULT_VARIANTS, ge=0, le=MAX_VARIANTS)


class ExpandResult(BaseModel):
    original_query: str
    expanded_queries: list[str] = Field(description="Every query to search, the original first.")
    notes: list[str] = Field(default_factory=list)


class ChatMessage(_Request):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_CHAT_MESSAGE_CHARS)


class ChatRequest(_Request):
    """The conversation so far, the newest user message last."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_CHAT_MESSAGES)


class ChatReply(BaseModel):
    reply: str = Field(description="The model's answer (empty when the LLM failed: see notes).")
    messages: list[ChatMessage] = Field(description="The conversation with the reply added: send it back next time.")
    tool_calls: list[ToolCallRecord]
    notes: list[str] = Field(default_factory=list)


class ToolCall(_Request):
    name: str = Field(min_length=1, max_length=100, description="A tool name from GET /api/tools.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")


class ModelInfo(BaseModel):
    name: str
    state: Literal["loading", "ready", "failed"]
    message: str | None = None


class LLMInfo(BaseModel):
    configured: bool
    model: str | None = None


class WebStatus(BaseModel):
    """What the gallery shows about the store."""

    index: IndexStatus
    model: ModelInfo
    llm: LLMInfo
    roots: list[str] = Field(description="The folders the API may read and index.")
    read_only: bool
    version: str


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. InvalidInputError.")
    message: str = Field(description="What happened and what to do.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
