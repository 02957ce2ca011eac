"""img-agent: agent-facing image search with CLIP and an incremental Faiss index.

``img_agent.connect()`` returns the tools of a store, served by its resident service (started when
none runs): ``connect().search_by_text("a dog on a beach", k=5).hits``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from img_agent.service.remote import RemoteTools

from img_agent.version import __version__

__all__ = ["__version__", "connect"]


def connect(*args: Any, **kwargs: Any) -> RemoteTools:
    """The tools of a store's service; see :func:`img_agent.service.remote.connect`."""
    from img_agent.service.remote import connect as connect_to_service

    return connect_to_service(*args, **kwargs)
