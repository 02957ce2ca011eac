"""What the web side is given by the service that serves it: plain objects and callables, no service import."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from img_agent.tools.image_tools import ImageTools, get_spec
from img_agent.tools.sandbox import MAX_INLINE_IMAGE_BYTES
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache


@dataclass(frozen=True)
class WebDeps:
    """Everything a request handler needs.

    Attributes:
        tools: the tools of a web client: confined to the store's default folders (what
            ``IMG_AGENT_IMAGE_ROOTS`` and the folders indexed from the command line allow); request
            headers never widen them.
        model: the CLIP model's state now.
        llm_model: the configured LLM's model name, or None when no LLM is configured.
        thumbs: the thumbnail cache.
        token: the token every request needs (see :mod:`img_agent.web.auth`).
        host: the address the listener is bound to.
        allowed_hosts: extra Host names accepted (``Settings.http_allowed_hosts``).
        max_upload: largest uploaded image, in bytes.
    """

    tools: Callable[[], ImageTools]
    model: Callable[[], ModelInfo]
    llm_model: str | None
    thumbs: ThumbnailCache
    token: str
    host: str = "127.0.0.1"
    allowed_hosts: Sequence[str] = field(default_factory=tuple)
    max_upload: int = MAX_INLINE_IMAGE_BYTES


def _deps(request: Request) -> WebDeps:
    return request.app.state.deps


Deps = Annotated[WebDeps, Depends(_deps)]
"""A handler parameter that receives the :class:`WebDeps`."""


def call_tool(tools: ImageTools, name: str, arguments: Mapping[str, object]):  # noqa: ANN201 - the tool's result model
    """Run tool ``name`` as every surface does: the spec validates (its own messages), then calls."""
    spec = get_spec(name)
    return spec.call(tools, spec.parse(dict(arguments)))
