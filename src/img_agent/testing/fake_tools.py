"""A scripted tool set for chat tests: two Chat Completions schemas and a recording dispatcher."""

from __future__ import annotations

import json
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_text",
            "description": "Search images by text.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "k": {"type": ["integer", "null"]}},
                "required": ["query", "k"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "index_status",
            "description": "Index status.",
            "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
            "strict": True,
        },
    },
]


class Dispatcher:
    """Records calls; ``search_text`` needs a non-empty query (else an error result, like the tools layer)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.raise_next: Exception | None = None

    def __call__(self, name: str, arguments: str) -> str:
        self.calls.append((name, arguments))
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        args = json.loads(arguments)
        if name == "search_text":
            if not args.get("query"):
                return json.dumps({"error": "query must not be empty; describe the images to find."})
            return json.dumps({"results": [{"id": 1, "path": "/photos/dog.jpg", "score": 0.31}]})
        return json.dumps({"live": 12, "index": "Flat"})
