"""The LLM recipes as requests: LLM-assisted search (expansion, fusion, explanation) and QA.

One request model per recipe, run the same way by every surface that offers them (the service's
JSON interface, the REST API, a command that opens the store itself); their results are the
recipes' own (:class:`~img_agent.agent.rag.RagResult`, :class:`~img_agent.agent.qa.QAResult`). A
server runs them on a client's confined view of the engine, so the thumbnails an LLM is shown come
from inside that client's allowed folders only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from img_agent.agent.expand import DEFAULT_VARIANTS, MAX_VARIANTS
from img_agent.agent.fuse import DEFAULT_RRF_K, FusionMethod
from img_agent.agent.qa import DEFAULT_QA_K
from img_agent.results import MAX_TOPK, SearchFilter, check_k

if TYPE_CHECKING:
    from img_agent.agent.llm import LLMClient
    from img_agent.agent.qa import QAResult
    from img_agent.agent.rag import RagResult
    from img_agent.index.engine import Engine
    from img_agent.tools.confined import ConfinedImages


class RagRequest(BaseModel):
    """``search TEXT --expand``: LLM query variants, fused retrieval, and an explanation."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=1000)
    k: int | None = Field(None, ge=1, le=MAX_TOPK, description="Results; null = the store's default.")
    expand: bool = True
    explain: bool = True
    fusion: FusionMethod = "rrf"
    variants: int = Field(DEFAULT_VARIANTS, ge=0, le=MAX_VARIANTS)
    rrf_k: int = Field(DEFAULT_RRF_K, ge=1)
    where: SearchFilter | None = Field(None, description="Conditions the images must meet (all of them); null = none.")

    def run(self, engine: Engine | ConfinedImages, llm: LLMClient | None) -> RagResult:
        from img_agent.agent.rag import rag_search

        return rag_search(engine, llm, self.query, check_k(self.k, engine.settings.topk), expand=self.expand,
                          explain=self.explain, fusion=self.fusion, variants=self.variants, rrf_k=self.rrf_k,
                          filter=self.where)


class QARequest(BaseModel):
    """``ask QUESTION``: retrieve the most relevant images and let the LLM answer, citing them."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=1000)
    k: int = Field(DEFAULT_QA_K, ge=1, le=MAX_TOPK)
    expand: bool = True
    where: SearchFilter | None = Field(None, description="Conditions the images must meet (all of them); null = none.")

    def run(self, engine: Engine | ConfinedImages, llm: LLMClient | None) -> QAResult:
        from img_agent.agent.qa import answer_question

        return answer_question(engine, llm, self.question, self.k, expand=self.expand,
                               filter=self.where)
