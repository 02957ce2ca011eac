"""img-agent: agent-facing image search with CLIP and an incremental Faiss index."""

__version__ = "0.1.0"
