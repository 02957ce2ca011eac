"""Where the service answers the LLM recipes (:mod:`img_agent.agent.recipes` holds their request models)."""

from __future__ import annotations

from img_agent.agent.recipes import QARequest, RagRequest

RAG_PATH = "/api/search/rag"
QA_PATH = "/api/rag/qa"

__all__ = ["QA_PATH", "RAG_PATH", "QARequest", "RagRequest"]
