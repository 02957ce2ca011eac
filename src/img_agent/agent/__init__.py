"""The agent layer: LLM query expansion, multi-way fusion, explanations, QA and tool-using chat.

Everything here works without an LLM (plain CLIP + Faiss retrieval, with notes saying so) and
degrades to that on any LLM failure. Heavy lifting stays in the engine; this package talks to an
OpenAI-compatible endpoint and combines engine results.

The package imports neither the tools layer nor the command line: the chat loop is given tool
schemas and a call function. Names are imported lazily, so ``import img_agent.agent.fuse`` (pure)
does not load ``openai``. The function ``fuse`` shares its module's name: import it from
``img_agent.agent.fuse``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MAX_TOOL_ROUNDS": "chat",
    "ChatSession": "chat",
    "ChatTurn": "chat",
    "ToolCallRecord": "chat",
    "ToolDispatcher": "chat",
    "Expansion": "expand",
    "expand_query": "expand",
    "expand_query_detailed": "expand",
    "parse_query_list": "expand",
    "Explanation": "explain",
    "explain_results": "explain",
    "FusedHit": "fuse",
    "FusionMethod": "fuse",
    "reciprocal_rank_fusion": "fuse",
    "score_fusion": "fuse",
    "extract_json": "jsontext",
    "ImagesNotSupportedError": "llm",
    "LLMClient": "llm",
    "PromptTemplate": "prompts",
    "load_prompt": "prompts",
    "render_prompt": "prompts",
    "QAResult": "qa",
    "QASource": "qa",
    "answer_question": "qa",
    "RagResult": "rag",
    "rag_search": "rag",
    "retrieve_fused": "rag",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from img_agent.agent.chat import (
        MAX_TOOL_ROUNDS,
        ChatSession,
        ChatTurn,
        ToolCallRecord,
        ToolDispatcher,
    )
    from img_agent.agent.expand import (
        Expansion,
        expand_query,
        expand_query_detailed,
        parse_query_list,
    )
    from img_agent.agent.explain import Explanation, explain_results
    from img_agent.agent.fuse import (
        FusedHit,
        FusionMethod,
        reciprocal_rank_fusion,
        score_fusion,
    )
    from img_agent.agent.jsontext import extract_json
    from img_agent.agent.llm import ImagesNotSupportedError, LLMClient
    from img_agent.agent.prompts import PromptTemplate, load_prompt, render_prompt
    from img_agent.agent.qa import QAResult, QASource, answer_question
    from img_agent.agent.rag import RagResult, rag_search, retrieve_fused


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'img_agent.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"img_agent.agent.{module}"), name)
