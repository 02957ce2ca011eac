"""The recipes' defaults and limits (light to import: the command line builds its flags from them)."""

from typing import Literal, get_args

DEFAULT_VARIANTS = 3
"""Query variants asked for besides the original query."""
MAX_VARIANTS = 10
FusionMethod = Literal["rrf", "max", "mean"]
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
DEFAULT_RRF_K = 60
DEFAULT_QA_K = 5
"""Images a question is answered from."""
MAX_TOOL_ROUNDS = 10
"""Rounds of tool calls a chat turn may take."""
