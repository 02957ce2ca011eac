"""``img_agent.connect()``: the tools of a store's service as Python methods.

:class:`RemoteTools` has one method per tool, with the tool's own parameters and result model
(``tools.search_by_text("a dog", k=5).hits``), generated from the same definitions as the MCP and
OpenAI schemas. Each call goes to the store's service, which is started when none runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from img_agent.results import JobInfo
from img_agent.service.client import ServiceClient
from img_agent.service.status import ServiceStatus
from img_agent.tools.image_tools import TOOL_SPECS
from img_agent.tools.spec import ToolSpec


def _method(spec: ToolSpec) -> Callable[..., BaseModel]:
    parameters = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if p.kind is inspect.Parameter.KEYWORD_ONLY
                  else p for p in spec.parameters]
    signature = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *parameters],
                                  return_annotation=spec.result_type)

    def call(self: RemoteTools, *args: Any, **kwargs: Any) -> BaseModel:
        bound = signature.bind(self, *args, **kwargs)
        arguments = {k: to_jsonable_python(v) for k, v in bound.arguments.items() if k != "self"}
        return spec.result_type.model_validate(self.client.call_tool(spec.name, arguments))

    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = spec.name
    call.__doc__ = spec.description
    return call


class RemoteTools:
    """The tools of the service of one store (see :func:`connect`)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def service_status(self) -> ServiceStatus:
        return ServiceStatus.model_validate(self.client.status())

    def job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self.client.request("GET", f"/api/jobs/{job_id}"))

    def dispatch(self, name: str, arguments: str | None) -> str:
        """A model's function call (its raw JSON arguments) answered as JSON text, like
        :func:`img_agent.tools.openai_tools.dispatch`: the tool's result, or ``{"error": ...}``; never raises
        for the call's own errors."""
        return self.client.request_text("POST", f"/api/tools/{name}/dispatch", arguments or "{}")

    def __repr__(self) -> str:
        return f"RemoteTools({str(self.client.paths.data_dir)!r})"


for _spec in TOOL_SPECS:
    setattr(RemoteTools, _spec.name, _method(_spec))


def connect(data_dir: str | Path | None = None, *, roots: Sequence[str | Path] | None = None,
            launch_args: Sequence[str] = (), **settings: Any) -> RemoteTools:
    """The tools of the store in ``data_dir`` (default: the configured one), served by its service.

    Args:
        data_dir: the store; default ``IMG_AGENT_DATA_DIR`` or the per-user default.
        roots: folders the calls may read and change; default: the store's configured and indexed folders.
        launch_args: command-line options for a service started by this call (e.g. ``["--model", "ViT-B-16"]``).
        settings: other :class:`~img_agent.config.Settings` fields (only ``data_dir`` matters to find the store).
    """
    from img_agent.config import Settings

    if data_dir is not None:
        settings["data_dir"] = Path(data_dir)
    resolved = Settings(**settings)
    client = ServiceClient(resolved.data_dir, launch_args=launch_args, client="python",
                           roots=[str(Path(r).expanduser().resolve()) for r in roots] if roots is not None else None)
    client.ensure()
    return RemoteTools(client)
