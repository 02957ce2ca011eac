"""Explanations of search results, grounded in what was found.

The model gets the query, the variants searched and one line per result (path, cosine score,
size and format, tags and description, which variants matched at which rank) and, when it accepts
images, small labelled thumbnails of the top results. Without an LLM, or when it fails, the
explanation is ``None`` and a note says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel, Field

from img_agent.agent.llm import LabeledImage, LLMClient
from img_agent.agent.prompts import render_prompt
from img_agent.agent.protocols import ThumbnailSource
from img_agent.errors import ImgAgentError, LLMError
from img_agent.results import SearchHit
from img_agent.textsafe import one_line, quoted

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGES = 4
"""Thumbnails sent to a multimodal model per explanation or answer."""

DEFAULT_THUMB_SIDE = 256
MAX_LISTED = 10
"""Results described to the model; the rest only change the count."""


class Explanation(BaseModel):
    """A short natural-language explanation of a result list."""

    text: str | None = Field(description="The explanation, or None when no LLM produced one.")
    images_sent: int = Field(0, description="Thumbnails the model was shown.")
    llm_used: bool = Field(description="Whether an LLM answer is included.")
    notes: list[str] = Field(default_factory=list, description="What was skipped or failed.")


def describe_hit(label: int, hit: SearchHit) -> str:
    """One line describing a hit to a model: ``[label] "path" — score ...; size; tags; matches``.

    The path, tags, description and queries are untrusted: each is a quoted string literal
    (:func:`~img_agent.textsafe.quoted`), so none can end the line or pass for an instruction.
    """
    parts = [f"[{label}] {quoted(hit.path)}", f"score {hit.score:.3f}", f"{hit.width}x{hit.height} {one_line(hit.format)}"]
    if hit.tags:
        parts.append("tags: " + ", ".join(quoted(tag) for tag in hit.tags))
    if hit.description:
        parts.append("description: " + quoted(" ".join(hit.description.split())[:300]))
    query_ranks = getattr(hit, "query_ranks", None)
    if query_ranks:
        parts.append("matched " + ", ".join(f"{quoted(q)} (#{r})" for q, r in query_ranks.items()))
    return parts[0] + " — " + "; ".join(parts[1:])


def collect_thumbnails(
    source: ThumbnailSource | None, hits: Sequence[SearchHit], max_images: int, max_side: int = DEFAULT_THUMB_SIDE
) -> tuple[list[LabeledImage], list[str]]:
    """Thumbnails of the first ``max_images`` hits, labelled ``[n] "path"``; unreadable ones are skipped.

    Returns ``(images, notes)``; notes name the images that could not be rendered.
    """
    images: list[LabeledImage] = []
    skipped: list[str] = []
    if source is None or max_images <= 0:
        return images, []
    for label, hit in enumerate(hits[:max_images], start=1):
        try:
            images.append((f"[{label}] {quoted(hit.path)}", source.thumbnail(hit.id, max_side=max_side)))
        except ImgAgentError as exc:
            logger.info("No thumbnail for image %d (%s): %s", hit.id, hit.path, exc)
            skipped.append(f"[{label}]")
    notes = [f"No thumbnail could be made for {', '.join(skipped)}."] if skipped else []
    return images, notes


def image_note(count: int) -> str:
    """The sentence telling the model whether thumbnails are attached."""
    if count:
        return f"Thumbnails of {count} of the images are attached, each after its [number] label."
    return "No thumbnails are attached: rely on paths, scores and metadata only."


def explain_results(
    llm: LLMClient | None,
    query: str,
    hits: Sequence[SearchHit],
    *,
    thumbnails: ThumbnailSource | None = None,
    expanded_queries: Sequence[str] | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
) -> Explanation:
    """Explain ``hits`` for ``query`` in a few sentences; never raises for LLM trouble.

    Args:
        llm: the model, or ``None`` (no explanation, with a note).
        query: the user's original query.
        hits: results, best first (fused hits carry their matched queries).
        thumbnails: where to get thumbnails (the engine); ``None`` sends none.
        expanded_queries: all queries searched, original first (default: just ``query``).
        max_images: thumbnails to attach when the model accepts images.
    """
    if llm is None:
        return Explanation(text=None, llm_used=False, notes=["No LLM configured: no explanation."])
    if not hits:
        return Explanation(text=None, llm_used=False, notes=["Nothing was found, so there is nothing to explain."])
    listed = list(hits[:MAX_LISTED])
    notes: list[str] = []
    images: list[LabeledImage] = []
    if llm.accepts_images:
        images, notes = collect_thumbnails(thumbnails, listed, max_images)
    prompts_dir = llm.settings.prompts_dir
    queries = list(expanded_queries) if expanded_queries else [query]
    results_text = "\n".join(describe_hit(i, hit) for i, hit in enumerate(listed, start=1))
    system = render_prompt("explain_system", prompts_dir)

    def build_user(sent: int) -> str:
        return render_prompt(
            "explain_user",
            prompts_dir,
            query=quoted(query),
            queries="; ".join(quoted(q) for q in queries),
            image_note=image_note(sent),
            count=len(listed),
            results=results_text,
        )

    try:
        text, sent, image_notes = llm.complete_with_images(system, build_user, images)
    except LLMError as exc:
        logger.warning("Explanation failed: %s", exc)
        return Explanation(text=None, llm_used=False, notes=[*notes, f"Explanation failed: {exc}"])
    return Explanation(text=text, images_sent=sent, llm_used=True, notes=[*notes, *image_notes])
