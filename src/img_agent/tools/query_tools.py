"""The combined search tool: weighted positive and negative text and image terms in one query.

:class:`QueryTools` is a mixin of :class:`~img_agent.tools.image_tools.ImageTools`; the algebra itself
lives in :mod:`img_agent.index.terms`. Every file a term names is read inside the sandbox, and every
query image passes the same size check as ``search_by_image`` before it is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.results import MAX_TERM_WEIGHT
from img_agent.tools.confined import query_image_guard
from img_agent.tools.limits import MAX_QUERY_CHARS
from img_agent.tools.sandbox import MAX_INLINE_IMAGE_BYTES, MAX_INLINE_IMAGE_CHARS
from img_agent.tools.shapes import CollapseDuplicates, SearchResult, ToolHit, TopK
from img_agent.tools.spec import tool
from img_agent.tools.where import NO_MATCH_NOTE, Where, confine_where

if TYPE_CHECKING:
    from img_agent.index.terms import Term
    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.tools.sandbox import Sandbox

MAX_TERMS = 10
"""Terms one combined search may have."""

_KINDS = ("text", "path", "image_base64", "image_id")


class QueryTerm(BaseModel):
    """One term of a combined search: exactly one of text, path, image_base64 or image_id, and its weight."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS, description=(
        "What the images should (or, with a negative weight, should not) show, in plain words, e.g. "
        "'a golden retriever'."))
    path: str | None = Field(None, max_length=4096, description=(
        "An image file on the server's machine, inside the allowed folders (absolute, or relative to an allowed "
        "folder)."))
    image_base64: str | None = Field(None, max_length=MAX_INLINE_IMAGE_CHARS, description=(
        f"An image itself, base64-encoded JPEG/PNG/WebP (a data: URL is accepted), at most "
        f"{MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MiB decoded."))
    image_id: int | None = Field(None, ge=0, description=(
        "The id of an indexed image (from earlier results); with a positive weight that image itself is left "
        "out of the results."))
    weight: float = Field(1.0, ge=-MAX_TERM_WEIGHT, le=MAX_TERM_WEIGHT, description=(
        f"How much the term counts, -{MAX_TERM_WEIGHT:g} to {MAX_TERM_WEIGHT:g}, not 0: 2 counts twice, 0.5 half, "
        "a negative weight subtracts the term (-1 = 'but not this'). null = 1."))

    @field_validator("weight", mode="before")
    @classmethod
    def _null_weight(cls, value: Any) -> Any:
        return 1.0 if value is None else value

    @model_validator(mode="after")
    def _one_kind(self) -> QueryTerm:
        given = [name for name in _KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            detail = "none was given" if not given else f"got {', '.join(given)}"
            raise ValueError(f"a term needs exactly one of text, path, image_base64 or image_id ({detail})")
        if self.weight == 0:
            raise ValueError("a term's weight cannot be 0; drop the term instead (a negative weight subtracts it)")
        if self.text is not None and not self.text.strip():
            raise ValueError("a text term is empty; describe what the images should (or should not) show")
        return self


TermList = Annotated[list[QueryTerm], Field(
    min_length=1, max_length=MAX_TERMS,
    description=f"1-{MAX_TERMS} terms, each exactly one of text, path, image_base64 or image_id, with a weight "
    "(default 1; negative subtracts). The query is the weighted sum of the terms' unit vectors, normalised.",
)]


class QueryTools:
    """Mixin: the combined search over ``self.engine``, reading files through ``self.sandbox``."""

    if TYPE_CHECKING:
        engine: Engine
        sandbox: Sandbox

    @tool(title="Search with combined terms", read_only=True, destructive=False, idempotent=True, shows_images=True)
    def search_combined(self, terms: TermList, k: TopK = None, where: Where = None,
                        collapse_duplicates: CollapseDuplicates = False) -> SearchResult:
        """Find indexed images with one query made of weighted text and image terms (CLIP), best first.

        Adds and subtracts concepts: [{"text": "a golden retriever", "weight": 2}, {"path": "/photos/pool.jpg"},
        {"text": "fruit", "weight": -1}] finds images like 2×"a golden retriever" + the pool photo − "fruit".
        The query vector is the weighted sum of each term's unit vector, normalised; scores are cosine
        similarities to it (higher is better). An indexed image given with a positive weight is left out of
        the results. Hits carry id, path, score and catalog metadata, as in search_by_text.
        """
        flt = confine_where(self.sandbox, where)
        labels: list[str] = []
        engine_terms: list[Term] = []
        images: list[tuple[str, bytes]] = []
        for n, term in enumerate(terms, start=1):
            label, engine_term = self._term(n, term)
            labels.append(label)
            engine_terms.append(engine_term)
            if isinstance(engine_term.image, bytes):
                images.append((f"term {n}", engine_term.image))
        if self.engine.live_count == 0:
            raise InvalidInputError(
                "The index is empty: no images have been added yet. Call add_images with image files or folders "
                "and search again."
            )
        with _image_guards(images, self.engine.settings):
            found = self.engine.search_terms(engine_terms, k=k, filter=flt, collapse=collapse_duplicates)
        result = SearchResult(query=render_query(labels, [t.weight for t in terms]),
                              hits=[ToolHit.model_validate(hit.model_dump()) for hit in found],
                              queries=[t.text for t in engine_terms if t.text is not None])
        if not found and flt is not None:
            result.notes.append(NO_MATCH_NOTE)
        return result

    def _term(self, n: int, term: QueryTerm) -> tuple[str, Term]:
        """The label and the engine term of term number ``n``; files are read inside the sandbox."""
        from img_agent.index.terms import Term  # numpy: not at server start

        try:
            if term.text is not None:
                text = " ".join(term.text.split())
                return json.dumps(text, ensure_ascii=False), Term(text=text, weight=term.weight)
            if term.path is not None:
                resolved, data = self.sandbox.read_file(term.path)
                return f"image {resolved}", Term(image=data, weight=term.weight)
            if term.image_base64 is not None:
                data = self.sandbox.decode_base64(term.image_base64)
                return f"inline image ({len(data):,} bytes)", Term(image=data, weight=term.weight)
            return f"image id {term.image_id}", Term(image_id=term.image_id, weight=term.weight)
        except InvalidInputError as exc:
            raise type(exc)(f"Term {n}: {exc}") from None


@contextmanager
def _image_guards(images: Sequence[tuple[str, bytes]], settings: Settings) -> Iterator[None]:
    """Check every query image's declared size before any is decoded, then hold one decode slot while the
    engine decodes them (one after another)."""
    for what, data in images:
        try:
            with query_image_guard(data, settings):
                pass
        except ImageDecodeError as exc:
            reason = str(exc).rstrip(". ")
            raise ImageDecodeError(f"{what.capitalize()} cannot be used as a query image ({reason}). Give a JPEG, "
                                   "PNG or WebP image.") from exc
    if not images:
        yield
        return
    with query_image_guard(images[0][1], settings):
        yield


def render_query(labels: Sequence[str], weights: Sequence[float]) -> str:
    """A readable rendering of a combined query, e.g. ``2×"golden retriever" + image /x/pool.jpg − "fruit"``."""
    out = ""
    for i, (label, weight) in enumerate(zip(labels, weights)):
        size = abs(weight)
        body = label if size == 1 else f"{size:g}×{label}"
        if i == 0:
            out = ("−" if weight < 0 else "") + body
        else:
            out += (" − " if weight < 0 else " + ") + body
    return out
