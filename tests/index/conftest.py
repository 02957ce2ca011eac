"""Fixtures of the engine-level tests: the vector store each contract test runs against."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["faiss", "milvus"])
def vector_store(request, tmp_path) -> str:
    """'faiss' (the in-process engine) or a Milvus Lite file in ``tmp_path``."""
    return "faiss" if request.param == "faiss" else str(tmp_path / "milvus.db")
