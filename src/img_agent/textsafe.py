"""Untrusted text made safe to show: one line, no control characters, no reordering marks.

File names, tags, descriptions and query variants come from outside img-agent. Written raw into a
prompt or a table, a name holding a newline forges whole lines (a fake ``[2] ... score 0.999``
entry, a ``SYSTEM:`` line), a carriage return overwrites a terminal line, and a bidi override
reorders what a person reads. Every place where such text enters a prompt (``agent/``) or a table
(``cli/output.py``, ``tools/render.py``) goes through this module:

- :func:`one_line`: the text with every unsafe character written as a visible escape
  (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028``, ``\\u202e`` ...); for tables and plain text;
- :func:`quoted`: the text as a double-quoted JSON string literal, unsafe characters escaped; for
  prompts, where untrusted text must read as data, never as a line of instructions;
- :func:`safe_json`: a value as JSON text with the same characters escaped inside its strings.

Unsafe characters are the C0 and C1 controls (and DEL), the Unicode line and paragraph separators
and the bidirectional formatting characters (embeddings, overrides, isolates and marks).
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# in JSON text a raw tab, newline or carriage return is whitespace between tokens (strings hold them escaped)
_UNSAFE_IN_JSON = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def has_unsafe(text: str) -> bool:
    """Whether ``text`` holds a character :func:`one_line` would escape."""
    return _UNSAFE.search(text) is not None


def one_line(text: object) -> str:
    """``text`` (``str()`` of it) on one line, every unsafe character written as a visible escape."""
    return _UNSAFE.sub(_escape, str(text))


def safe_json(value: Any, **dumps_options: Any) -> str:
    """``value`` as JSON text; non-ASCII kept, but unsafe characters ``\\uXXXX``-escaped.

    The result decodes to the same value: in valid JSON these characters can only stand inside
    strings, where ``\\uXXXX`` means the same character.
    """
    dumps_options.setdefault("ensure_ascii", False)
    return escape_json_text(json.dumps(value, **dumps_options))


def escape_json_text(text: str) -> str:
    """JSON text (already encoded) with the unsafe characters inside its strings ``\\uXXXX``-escaped."""
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


def quoted(text: object) -> str:
    """``text`` as a double-quoted JSON string literal on one line (quotes and backslashes escaped)."""
    return safe_json(str(text))
