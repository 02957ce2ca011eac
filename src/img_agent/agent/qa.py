"""Question answering over the image collection.

Retrieve the images most relevant to a question (with query expansion when an LLM is present),
then ask the model to answer from them: labelled thumbnails for a multimodal model, paths and
metadata otherwise. The model cites images as ``[n]``; the result maps citations back to image ids.
Without an LLM, or when it fails, the answer is ``None`` and the retrieved images are still returned.
"""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, Field

from img_agent.agent.defaults import DEFAULT_QA_K
from img_agent.agent.expand import Expansion, clean_query, expand_query_detailed
from img_agent.agent.explain import (
    DEFAULT_MAX_IMAGES,
    collect_thumbnails,
    describe_hit,
    image_note,
)
from img_agent.agent.fuse import FusedHit
from img_agent.agent.llm import LabeledImage, LLMClient, budget_of
from img_agent.agent.prompts import render_prompt
from img_agent.agent.protocols import RetrievalEngine
from img_agent.agent.rag import retrieve_fused
from img_agent.errors import LLMError
from img_agent.results import SearchFilter, check_k
from img_agent.textsafe import quoted

logger = logging.getLogger(__name__)

QA_VARIANTS = 2
"""Search variants asked for when expanding a question."""

_CITATION = re.compile(r"\[\s*(\d{1,4}(?:\s*[,\uff0c;]\s*\d{1,4})*)\s*\]")


class QASource(BaseModel):
    """One image shown to the model while answering."""

    label: int = Field(description="The [n] number the model saw and cites.")
    id: int = Field(description="Image id.")
    path: str = Field(description="Image path.")
    score: float = Field(description="Best cosine similarity to the question or its variants.")
    thumbnail_sent: bool = Field(description="Whether the model saw a thumbnail of it.")
    cited: bool = Field(description="Whether the answer cites it.")


class QAResult(BaseModel):
    """An answer to a question about the images, with the images it rests on."""

    question: str
    answer: str | None = Field(description="The model's answer, or None when no LLM answered.")
    sources: list[QASource] = Field(description="Images retrieved for the question, best first.")
    cited_ids: list[int] = Field(default_factory=list, description="Ids of the images the answer cites, in citation order.")
    searched_queries: list[str] = Field(description="Queries searched: the question first, then its variants.")
    images_sent: int = Field(0, description="Thumbnails the model was shown.")
    llm_used: bool = Field(description="Whether an LLM answer is included.")
    notes: list[str] = Field(default_factory=list, description="What was skipped or failed, and why.")


def parse_citations(answer: str, count: int) -> list[int]:
    """1-based labels cited as ``[n]`` / ``[n, m]`` in ``answer``, in order, without repeats, within ``1..count``."""
    labels: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in re.split(r"[,\uff0c;]", match.group(1)):
            label = int(part)
            if 1 <= label <= count and label not in labels:
                labels.append(label)
    return labels


def answer_question(
    engine: RetrievalEngine,
    llm: LLMClient | None,
    question: str,
    k: int = DEFAULT_QA_K,
    *,
    expand: bool = True,
    filter: SearchFilter | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> QAResult:
    """Answer ``question`` from the ``k`` most relevant images; never raises for LLM trouble.

    Args:
        engine: the index.
        llm: the model, or ``None`` (retrieval only, with a note).
        question: the question, any language.
        k: images to retrieve and describe to the model (1..MAX_TOPK).
        expand: rewrite the question into search variants first (only with an LLM).
        filter: conditions the retrieved images must meet (see SearchFilter).
        max_images: thumbnails shown to a multimodal model (the first ``max_images`` sources).

    Raises:
        InvalidInputError: empty question or bad ``k``; engine errors propagate.
    """
    with budget_of(llm):  # one deadline for the expansion and the answer together
        return _answer(engine, llm, question, k, expand=expand, filter=filter, max_images=max_images)


def _answer(
    engine: RetrievalEngine,
    llm: LLMClient | None,
    question: str,
    k: int,
    *,
    expand: bool,
    filter: SearchFilter | None,
    max_images: int,
) -> QAResult:
    k = check_k(k, DEFAULT_QA_K)
    question = clean_query(question)
    notes: list[str] = []
    if llm is not None and expand:
        expansion = expand_query_detailed(llm, question, QA_VARIANTS)
        notes.extend(expansion.notes)
    else:
        expansion = Expansion(queries=[question], llm_used=False)
    hits = retrieve_fused(engine, expansion.queries, k, filter=filter)

    def result(answer: str | None, sent: int, cited: list[int], used: bool) -> QAResult:
        sources = [
            QASource(
                label=i,
                id=hit.id,
                path=hit.path,
                score=hit.score,
                thumbnail_sent=i <= sent,
                cited=i in cited,
            )
            for i, hit in enumerate(hits, start=1)
        ]
        return QAResult(
            question=question,
            answer=answer,
            sources=sources,
            cited_ids=[hits[label - 1].id for label in cited],
            searched_queries=expansion.queries,
            images_sent=sent,
            llm_used=used or expansion.llm_used,
            notes=notes,
        )

    if llm is None:
        notes.append("No LLM configured: these are the most relevant images; no answer was generated.")
        return result(None, 0, [], False)
    if not hits:
        notes.append("No images are indexed (or none match the filter), so the question cannot be answered.")
        return result(None, 0, [], False)
    answer, sent, cited = _ask(llm, question, hits, engine, max_images, notes)
    return result(answer, sent, cited, answer is not None)


def _ask(
    llm: LLMClient,
    question: str,
    hits: list[FusedHit],
    engine: RetrievalEngine,
    max_images: int,
    notes: list[str],
) -> tuple[str | None, int, list[int]]:
    """Ask the model; returns ``(answer or None, thumbnails sent, cited labels)`` and appends notes."""
    images: list[LabeledImage] = []
    if llm.accepts_images:
        images, thumb_notes = collect_thumbnails(engine, hits, max_images)
        # a skipped thumbnail would shift "first n sources were shown"; send only a gap-free prefix
        prefix = 0
        for label, (text, _data) in enumerate(images, start=1):
            if not text.startswith(f"[{label}] "):
                break
            prefix = label
        images = images[:prefix]
        notes.extend(thumb_notes)
    prompts_dir = llm.settings.prompts_dir
    listing = "\n".join(describe_hit(i, hit) for i, hit in enumerate(hits, start=1))
    system = render_prompt("qa_system", prompts_dir)

    def build_user(sent: int) -> str:
        return render_prompt(
            "qa_user", prompts_dir, question=quoted(question), image_note=image_note(sent), count=len(hits), images=listing
        )

    try:
        answer, sent, image_notes = llm.complete_with_images(system, build_user, images)
    except LLMError as exc:
        logger.warning("Question answering failed: %s", exc)
        notes.append(f"Answering failed: {exc}. Showing the most relevant images instead.")
        return None, 0, []
    notes.extend(image_notes)
    return answer, sent, parse_citations(answer, len(hits))
