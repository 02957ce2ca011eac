"""RAG search: expand the query, search every variant, fuse, explain.

::

    expand_query_detailed(query) -> [q0 (original), q1..qn]
    engine.encode_text([q0..qn])          one batch
    engine.search_vectors(...)            one search per variant
    fuse(...)                             RRF by image id (or max / mean cosine)
    explain_results(...)                  thumbnails to a multimodal model

Without an LLM (or when a step fails) this is plain CLIP + Faiss retrieval and the result's
``notes`` and ``llm_used`` say so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel, Field

from img_agent.agent.expand import (
    DEFAULT_VARIANTS,
    Expansion,
    clean_query,
    expand_query_detailed,
)
from img_agent.agent.explain import DEFAULT_MAX_IMAGES, explain_results
from img_agent.agent.fuse import DEFAULT_RRF_K, FusedHit, FusionMethod, fuse
from img_agent.agent.llm import LLMClient, budget_of
from img_agent.agent.protocols import RetrievalEngine
from img_agent.errors import InvalidInputError
from img_agent.results import DEFAULT_TOPK, MAX_TOPK, SearchFilter, check_k

logger = logging.getLogger(__name__)

NO_LLM_NOTE = "No LLM configured: plain CLIP retrieval, without query expansion or explanation."


class RagResult(BaseModel):
    """A RAG search response (``original_query`` ... ``total_results``) plus provenance."""

    original_query: str = Field(description="The query as given.")
    expanded_queries: list[str] = Field(description="Every query searched, the original first.")
    results: list[FusedHit] = Field(description="Fused results, best first; score is the best cosine.")
    ai_explanation: str | None = Field(description="The LLM's explanation, or None when none was produced.")
    total_results: int = Field(description="Number of results returned.")
    fusion: FusionMethod = Field(description="How per-query result lists were fused.")
    llm_used: bool = Field(description="Whether any LLM answer contributed (expansion or explanation).")
    images_sent: int = Field(0, description="Thumbnails shown to the model for the explanation.")
    notes: list[str] = Field(default_factory=list, description="Which LLM steps were skipped or failed, and why.")


def retrieve_fused(
    engine: RetrievalEngine,
    queries: Sequence[str],
    k: int,
    *,
    fusion: FusionMethod = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    filter: SearchFilter | None = None,
) -> list[FusedHit]:
    """Search every query (one encode batch, one vector search) and fuse to the top ``k``.

    With several queries each list is searched ``2k`` deep (capped at ``MAX_TOPK``) so fusion can
    promote images that several variants rank just below the cut.

    Raises:
        InvalidInputError: no queries or bad ``k``; engine errors propagate unchanged.
    """
    k = check_k(k, DEFAULT_TOPK)
    if not queries:
        raise InvalidInputError("No queries to search.")
    depth = min(MAX_TOPK, 2 * k) if len(queries) > 1 else k
    vectors = engine.encode_text(list(queries))
    per_query = engine.search_vectors(vectors, k=depth, filter=filter)
    return fuse(list(zip(queries, per_query, strict=True)), fusion, rrf_k=rrf_k, limit=k)


def rag_search(
    engine: RetrievalEngine,
    llm: LLMClient | None,
    query: str,
    k: int = DEFAULT_TOPK,
    *,
    expand: bool = True,
    explain: bool = True,
    fusion: FusionMethod = "rrf",
    variants: int = DEFAULT_VARIANTS,
    rrf_k: int = DEFAULT_RRF_K,
    filter: SearchFilter | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> RagResult:
    """LLM-assisted search; falls back to plain retrieval for every LLM step that is off or fails.

    Args:
        engine: the index (see :class:`~img_agent.agent.protocols.RetrievalEngine`).
        llm: the model, or ``None`` for plain retrieval.
        query: what to look for, any language.
        k: results to return (1..MAX_TOPK).
        expand: ask the LLM for ``variants`` rewrites of the query.
        explain: ask the LLM to explain the results.
        fusion: ``rrf`` (default), ``max`` or ``mean``; see :mod:`img_agent.agent.fuse`.
        rrf_k: the RRF constant.
        filter: conditions the results must meet (folder, dates, tags, ...; see SearchFilter).
        max_images: thumbnails shown to a multimodal model for the explanation.

    Raises:
        InvalidInputError: empty query, bad ``k`` / ``variants`` / ``fusion``; engine errors
            propagate. LLM failures never raise.
    """
    with budget_of(llm):  # one deadline for the expansion and the explanation together
        k = check_k(k, DEFAULT_TOPK)
        notes: list[str] = []
        if llm is None and (expand or explain):
            notes.append(NO_LLM_NOTE)
        if expand and llm is not None:
            expansion = expand_query_detailed(llm, query, variants)
            notes.extend(expansion.notes)
        else:
            expansion = Expansion(queries=[clean_query(query)], llm_used=False)
        original = expansion.queries[0]
        results = retrieve_fused(engine, expansion.queries, k, fusion=fusion, rrf_k=rrf_k, filter=filter)
        explanation_text: str | None = None
        images_sent = 0
        explained = False
        if explain and llm is not None:
            explanation = explain_results(
                llm, original, results, thumbnails=engine, expanded_queries=expansion.queries, max_images=max_images
            )
            explanation_text, images_sent, explained = explanation.text, explanation.images_sent, explanation.llm_used
            notes.extend(explanation.notes)
        return RagResult(
            original_query=query,
            expanded_queries=expansion.queries,
            results=results,
            ai_explanation=explanation_text,
            total_results=len(results),
            fusion=fusion,
            llm_used=expansion.llm_used or explained,
            images_sent=images_sent,
            notes=notes,
        )
