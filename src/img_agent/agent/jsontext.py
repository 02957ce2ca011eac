"""Forgiving JSON extraction from a model's answer: bare, fenced, or embedded in prose."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)


def _json_candidates(text: str) -> Iterator[str]:
    """Texts worth trying as JSON, most likely first: the whole text, then fenced blocks."""
    stripped = text.strip()
    if stripped:
        yield stripped
    for match in _FENCE.finditer(text):
        block = match.group(2).strip()
        if block:
            yield block


def extract_json(text: str) -> Any | None:
    """Find the first JSON array or object in a model's answer.

    Tries, in order: the whole text, the contents of each ```` ``` ```` fence (with or without a
    ``json`` tag), then the first ``[...]`` or ``{...}`` that decodes, scanning the text from left to
    right (JSON embedded in prose). Scalars (a bare string or number) are not accepted, since a
    prose answer like ``"yes"`` is not structured output. Returns ``None`` when nothing decodes.
    """
    decoder = json.JSONDecoder()
    for candidate in _json_candidates(text):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, (list, dict)):
            return value
    for start, char in enumerate(text):
        if char not in "[{":
            continue
        try:
            value, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, (list, dict)):
            return value
    return None
