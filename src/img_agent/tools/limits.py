"""The limits on what one tool call may ask for (argument bounds the schemas state)."""

from __future__ import annotations

MAX_QUERY_CHARS = 1000
"""Longest text query or question; CLIP reads about 77 tokens anyway."""
MAX_PATHS_PER_CALL = 1000
"""Most files/folders one add_images call may name (folders can hold any number of images)."""
MAX_IDS_PER_CALL = 10_000
"""Most ids or paths one remove_images call may name."""
MAX_ANSWER_K = 50
"""Most images ask_about_images retrieves: each becomes a line, or a thumbnail, in the LLM prompt."""
MAX_INDEX_STRING_CHARS = 200
PROGRESS_POLL_S = 0.2
"""How often a waiting add_images reports its job's progress."""
