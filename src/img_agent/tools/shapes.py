"""Shapes the tools share: parameter types (k) and results beyond the engine's own."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from img_agent.results import DEFAULT_DUPLICATE_THRESHOLD, MAX_TOPK, SearchHit

TopK = Annotated[
    int | None,
    Field(ge=1, le=MAX_TOPK, description=f"How many images to return (1-{MAX_TOPK}); null = the server's default (usually 20)."),
]


CollapseDuplicates = Annotated[bool, Field(
    description=f"Fold near-duplicates (cosine >= {DEFAULT_DUPLICATE_THRESHOLD:g}) of a better hit into it, listed in its "
    "'duplicates', so the k results are k different pictures.",
)]


class ToolHit(SearchHit):
    """One image found: catalog record, 1-based rank and cosine score."""

    matched_queries: list[str] | None = Field(
        None, description="With expand: the query variants whose results contained this image."
    )
    duplicates: list[int] | None = Field(
        None, description="With collapse_duplicates: ids of lower-ranked near-duplicates of this image (the same "
        "picture resized, re-encoded or slightly cropped) folded into it; null when results are not collapsed."
    )


class SearchResult(BaseModel):
    """Images found for one query, best first."""

    query: str = Field(description="What was searched: the text query, or a description of the query image.")
    hits: list[ToolHit] = Field(description="Matching images, best first.")
    queries: list[str] = Field(
        default_factory=list, description="Text queries searched: the query first, then any LLM-written variants."
    )
    notes: list[str] = Field(default_factory=list, description="Things worth knowing about this result.")


class AnswerSource(SearchHit):
    """An image retrieved for a question; ``rank`` is the [n] label the answer cites."""

    cited: bool = Field(description="Whether the answer cites this image.")


class AnswerResult(BaseModel):
    """An answer to a question about the images, with the images it rests on."""

    question: str
    answer: str | None = Field(description="The LLM's answer citing images as [n], or null when no LLM answered.")
    llm_used: bool = Field(description="Whether an LLM produced the answer or query variants.")
    sources: list[AnswerSource] = Field(description="Images retrieved for the question, best first.")
    searched_queries: list[str] = Field(description="Queries searched: the question first, then its variants.")
    notes: list[str] = Field(default_factory=list, description="What was skipped or failed, and why.")
