"""Query expansion: an LLM rewrites a search query into a few semantic variants.

The original query is always kept first; duplicates (ignoring case and spacing) are dropped.
Queries written in a non-Latin script (Chinese, Japanese, Cyrillic, ...) also get English
variants, since CLIP ViT-B/32 was trained on English captions. The model's answer is parsed
forgivingly (:func:`parse_query_list`); an unusable answer, or a failed LLM call, leaves the
original query alone with a note saying why.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

from pydantic import BaseModel, Field

from img_agent.agent.defaults import DEFAULT_VARIANTS, MAX_VARIANTS
from img_agent.agent.jsontext import extract_json
from img_agent.agent.llm import LLMClient
from img_agent.agent.prompts import render_prompt
from img_agent.errors import InvalidInputError, LLMError
from img_agent.textsafe import quoted

logger = logging.getLogger(__name__)

MAX_VARIANT_CHARS = 300
"""Longer lines are prose, not search queries, and are dropped."""
MAX_PLAIN_LINE_WORDS = 20
"""Unmarked lines longer than this mean the answer is prose, not a list."""

_LIST_KEYS = ("queries", "variants", "expanded_queries", "expansions", "rewrites", "results")
_MARKER = re.compile(r"^\s*(?:[-*\u2022\u00b7]|\(?\d{1,2}[.):]|\d{1,2}\s*[-\u2013])\s+")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u300c\u300d"


class Expansion(BaseModel):
    """The queries to search: the original first, then the model's variants."""

    queries: list[str] = Field(description="Original query first, then distinct variants.")
    llm_used: bool = Field(description="Whether an LLM answer contributed variants.")
    notes: list[str] = Field(default_factory=list, description="What was skipped or failed, for the user.")


def normalize_query(text: str) -> str:
    """Key used to detect duplicate queries: case-folded, whitespace collapsed, outer punctuation dropped."""
    return " ".join(text.casefold().split()).strip(" .,;:!?\u3002\uff0c")


def needs_english(text: str) -> bool:
    """Whether ``text`` contains letters of a non-Latin script (so English variants are required)."""
    for char in text:
        if char.isalpha() and ord(char) > 127 and not unicodedata.name(char, "").startswith("LATIN"):
            return True
    return False


def is_english_like(text: str) -> bool:
    """Whether every letter of ``text`` is ASCII (a cheap stand-in for "written in English")."""
    return all(ord(c) < 128 for c in text if c.isalpha())


def clean_query(query: str) -> str:
    """``query`` with whitespace collapsed.

    Raises:
        InvalidInputError: the query is empty or blank.
    """
    cleaned = " ".join(query.split())
    if not cleaned:
        raise InvalidInputError("The query is empty; give a few words describing the images.")
    return cleaned


def dedupe_queries(queries: Iterable[str]) -> list[str]:
    """Drop empty and duplicate queries (see :func:`normalize_query`), keeping first occurrences."""
    seen: set[str] = set()
    out: list[str] = []
    for query in queries:
        cleaned = " ".join(query.split())
        key = normalize_query(cleaned)
        if key and key not in seen:
            seen.add(key)
            out.append(cleaned)
    return out


def _clean_item(item: str) -> str:
    text = _MARKER.sub("", item.strip(), count=1).strip()
    # strip matching outer quotes and a trailing comma left by half-JSON answers
    text = text.rstrip(",").strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _strings_from_json(value: object) -> list[str] | None:
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return _strings_from_json(value[key])
        lists = [v for v in value.values() if isinstance(v, list)]
        return _strings_from_json(lists[0]) if len(lists) == 1 else None
    if isinstance(value, list):
        items: list[str] = []
        for entry in value:
            if isinstance(entry, str):
                items.append(entry)
            elif isinstance(entry, dict):  # [{"query": "..."}]
                text = entry.get("query") or entry.get("text")
                if isinstance(text, str):
                    items.append(text)
        return items or None
    return None


def parse_query_list(text: str) -> list[str] | None:
    """Read a list of queries from a model's answer, or ``None`` when it holds no usable list.

    Accepted shapes: a JSON array of strings; an object with a ``queries`` (or ``variants``, ...)
    array; either of those inside a code fence or embedded in prose; bulleted or numbered lines;
    plain lines (at least two, none ending with a colon). A single line of prose, a refusal or
    truncated JSON gives ``None``.
    """
    value = extract_json(text)
    if value is not None:
        items = _strings_from_json(value)
        if items is not None:
            cleaned = [_clean_item(i) for i in items]
            return [c for c in cleaned if c and len(c) <= MAX_VARIANT_CHARS] or None
    lines = [line.strip() for line in text.replace("```", "\n").splitlines()]
    lines = [line for line in lines if line and line[0] not in "[]{}" and not line.lower().startswith("json")]
    marked = [line for line in lines if _MARKER.match(line)]
    if marked:
        candidates = marked
    elif len(lines) >= 2 and not any(
        line.endswith((":", "\uff1a")) or len(line.split()) > MAX_PLAIN_LINE_WORDS for line in lines
    ):
        candidates = lines
    else:
        return None
    cleaned = [_clean_item(line) for line in candidates]
    return [c for c in cleaned if c and len(c) <= MAX_VARIANT_CHARS] or None


def expand_query_detailed(llm: LLMClient | None, query: str, n: int = DEFAULT_VARIANTS) -> Expansion:
    """Expand ``query`` into at most ``n`` variants besides the original (so ``n + 1`` queries).

    Never raises for LLM trouble: without an LLM, or when it fails or answers unusably, the
    result is the original query alone, with a note.

    Raises:
        InvalidInputError: empty query or ``n`` outside 0..10.
    """
    query = clean_query(query)
    if not 0 <= n <= MAX_VARIANTS:
        raise InvalidInputError(f"Number of query variants must be between 0 and {MAX_VARIANTS}, got {n}.")
    if llm is None:
        return Expansion(queries=[query], llm_used=False, notes=["No LLM configured: query not expanded."])
    if n == 0:
        return Expansion(queries=[query], llm_used=False)
    prompts_dir = llm.settings.prompts_dir
    non_english = needs_english(query)
    language_note = render_prompt("expand_non_english", prompts_dir).strip() if non_english else ""
    messages = [
        {"role": "system", "content": render_prompt("expand_system", prompts_dir, n=n)},
        {
            "role": "user",
            "content": render_prompt("expand_user", prompts_dir, query=quoted(query), n=n, language_note=language_note),
        },
    ]
    try:
        answer = llm.complete_text(messages)
    except LLMError as exc:
        logger.warning("Query expansion failed: %s", exc)
        return Expansion(queries=[query], llm_used=False, notes=[f"Query expansion failed: {exc}"])
    variants = parse_query_list(answer)
    if variants is None:
        logger.warning("Query expansion answer unusable: %.200r", answer)
        return Expansion(
            queries=[query],
            llm_used=False,
            notes=["Query expansion failed: the LLM's answer held no usable list of queries; searched the original only."],
        )
    queries = dedupe_queries([query, *variants])[: n + 1]
    notes: list[str] = []
    if len(queries) == 1:
        notes.append("Query expansion produced no new variants; searched the original only.")
    if non_english and not any(is_english_like(q) for q in queries[1:]):
        notes.append("The query is not in English and the LLM gave no English variant; CLIP may match poorly.")
    return Expansion(queries=queries, llm_used=True, notes=notes)


def expand_query(llm: LLMClient | None, query: str, n: int = DEFAULT_VARIANTS) -> list[str]:
    """The queries of :func:`expand_query_detailed` (original first); notes are dropped."""
    return expand_query_detailed(llm, query, n).queries
