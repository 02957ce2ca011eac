"""img-agent's tools as an MCP server (official ``mcp`` SDK 2.x), over stdio or streamable HTTP.

Each tool of :data:`~img_agent.tools.image_tools.TOOL_SPECS` is registered with ``add_tool`` through
a generated adapter whose signature is the tool's own parameters (plus the thumbnail options,
:data:`THUMBNAIL_PARAMETERS`, for tools that show images: MCP can carry images back to a
multimodal model, a JSON function result cannot) and whose return annotation is
``Annotated[CallToolResult, ResultModel]``: the SDK derives the input and output schemas from it.
The title, description and annotations come from the same spec.

Every call goes through the same validation and error texts as the OpenAI dispatcher:
:class:`ImageMCPServer` validates the arguments with the spec's model before the SDK does, and
failures come back as ``isError`` results whose text is exactly the shared message (the SDK would
otherwise prefix "Error executing tool ..." to a ``ToolError``, or hide an unexpected error behind it).

The tools come from a :data:`ToolsSource`: fixed tools, a ``Future`` of them while the engine opens
(:mod:`img_agent.tools.mcp_standalone`), or tools chosen per request (the store's service, by the
folders each client may touch). Importing this module imports neither torch nor faiss nor openai.

Before a tool that needs confirmation runs (it can remove something, or it is costly: adding,
merging, rebuilding, describing), a client that declared the elicitation capability is asked to
confirm the call, on every protocol revision, with a preview from the tool's ``dry_run`` where it has
one (:mod:`img_agent.tools.mcp_confirm`); a decline makes the result an error saying the call was not
run. Other clients get the call as it is: they confirm from the tool's annotations.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Protocol, runtime_checkable

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    ContentBlock,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from img_agent.errors import ImgAgentError
from img_agent.tools.image_tools import TOOL_SPECS, ImageTools, get_spec
from img_agent.tools.mcp_confirm import (
    CONFIRMATION_PARAMETER,
    DECLINED_MESSAGE,
    Answer,
    confirmation_parameter,
    confirmed,
)
from img_agent.tools.render import render, thumbnail_blocks
from img_agent.tools.spec import ToolSpec, UnknownToolError, error_message
from img_agent.version import __version__

logger = logging.getLogger(__name__)

SERVER_NAME = "img-agent"
PROGRESS_INTERVAL = 0.25
"""Seconds between progress notifications of one call."""

INSTRUCTIONS = """\
Search a local image collection by meaning (CLIP embeddings in a Faiss index).
- search_by_text finds images matching a description; search_by_image finds images like an example
  (a file path, base64 data, or the id of an indexed image). Results carry ids, paths, cosine scores
  (higher is better) and, on request, small thumbnails you can look at.
- ask_about_images answers a question from the most relevant images (with the server's LLM, if any).
- add_images indexes files and folders (inside the allowed folders only); remove_images drops images
  from the index (files are never touched). index_status shows counts and whether merge_buffer or
  rebuild_index is advised.
Errors say what to change; fix the arguments and call again."""

DEFAULT_THUMBNAILS = 3
MAX_THUMBNAILS = 10
DEFAULT_THUMBNAIL_SIDE = 192
MIN_THUMBNAIL_SIDE = 32
MAX_THUMBNAIL_SIDE = 512

THUMBNAIL_PARAMETERS: tuple[inspect.Parameter, ...] = (
    inspect.Parameter(
        "thumbnails",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_THUMBNAILS,
        annotation=Annotated[int, Field(
            ge=0, le=MAX_THUMBNAILS,
            description=f"How many of the first images to also return as small JPEG thumbnails you can "
            f"look at (0-{MAX_THUMBNAILS}; 0 = none).",
        )],
    ),
    inspect.Parameter(
        "thumbnail_size",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_THUMBNAIL_SIDE,
        annotation=Annotated[int, Field(
            ge=MIN_THUMBNAIL_SIDE, le=MAX_THUMBNAIL_SIDE,
            description=f"Longest side of each thumbnail in pixels ({MIN_THUMBNAIL_SIDE}-{MAX_THUMBNAIL_SIDE}).",
        )],
    ),
)
"""The presentation options of tools that show images; they shape the result, not the operation."""

MCP_SPECS: tuple[ToolSpec, ...] = tuple(
    spec.with_options(THUMBNAIL_PARAMETERS) if spec.shows_images else spec for spec in TOOL_SPECS
)
"""Every tool as the MCP surface offers it: the thumbnail options added where images are shown."""
_MCP_BY_NAME = {spec.name: spec for spec in MCP_SPECS}

@runtime_checkable
class ToolsByRequest(Protocol):
    """Tools chosen per request, e.g. by the folders a client may touch (the store's service)."""

    def tools_for_request(self, headers: Mapping[str, str] | None) -> ImageTools: ...


ToolsSource = ImageTools | Future | ToolsByRequest  # a Future[ImageTools] while the engine is still opening


def resolve_tools(source: ToolsSource, headers: Mapping[str, str] | None) -> ImageTools:
    """The tools a call runs on (waits for a Future while the engine opens)."""
    if isinstance(source, Future):
        return source.result()
    if isinstance(source, ToolsByRequest):
        return source.tools_for_request(headers)
    return source

OpenTools = Callable[[], AbstractAsyncContextManager[ToolsSource]]
"""Opens the tools for the server's lifetime (the lifespan): yields ImageTools or a Future of them."""


class ImageMCPServer(MCPServer):
    """An :class:`MCPServer` that validates calls to img-agent tools with the shared spec first.

    Validation failures become ``isError`` results carrying exactly the message
    :func:`~img_agent.tools.openai_tools.dispatch` returns for the same call; an unknown tool name is
    a protocol error (JSON-RPC ``-32602``) naming the tools that exist. Input schemas say that no
    other keys are accepted (``additionalProperties: false``), as validation enforces.
    """

    _listed: list[Any] | None = None

    async def list_tools(self) -> list[Any]:
        if self._listed is None:  # the tools never change while a server runs: list them once
            listed = await super().list_tools()
            for tool in listed:
                tool.input_schema = {**tool.input_schema, "additionalProperties": False}
            self._listed = listed
        return list(self._listed)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        try:
            get_spec(name)
        except UnknownToolError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        try:
            parsed = _MCP_BY_NAME[name].parse(arguments)
        except ImgAgentError as exc:
            return error_result(error_message(name, exc))
        return await super().call_tool(name, parsed, context)


def error_result(message: str) -> CallToolResult:
    """A tool result the model reads as a failure, with an actionable message."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


# ---------------------------------------------------------------------------------- adapters


class _LatestProgress:
    """Progress reported from any engine thread; the event loop sends only the latest value."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[int, int | None, str] | None = None

    def __call__(self, done: int, total: int | None, message: str) -> None:
        with self._lock:
            self._latest = (done, total, message)

    def take(self) -> tuple[int, int | None, str] | None:
        with self._lock:
            latest, self._latest = self._latest, None
        return latest


async def _send_progress(ctx: Context, progress: _LatestProgress) -> None:
    item = progress.take()
    if item is not None:
        done, total, message = item
        await ctx.report_progress(done, total, message or None)


async def _pump_progress(ctx: Context, progress: _LatestProgress) -> None:
    while True:
        await anyio.sleep(PROGRESS_INTERVAL)
        await _send_progress(ctx, progress)


async def run_tool(spec: ToolSpec, source: ToolsSource, arguments: dict[str, Any], ctx: Context | None) -> CallToolResult:
    """Run one validated call in a worker thread: progress while it runs, cancellation when the
    client cancels, thumbnails for tools that show images, and every failure as an ``isError`` result."""
    cancel = threading.Event()
    progress = _LatestProgress() if "progress" in spec.injected else None
    headers = ctx.headers if ctx is not None else None

    def work() -> tuple[BaseModel, list[ContentBlock]] | str:
        try:
            tools = resolve_tools(source, headers)
            result = spec.call(tools, arguments, progress=progress, cancel=cancel)
            images: list[ContentBlock] = []
            if spec.shows_images and arguments.get("thumbnails"):
                images = thumbnail_blocks(tools, result, arguments["thumbnails"], arguments["thumbnail_size"])
            return result, images
        except Exception as exc:  # noqa: BLE001 - becomes the model's error message; bugs are logged there
            return error_message(spec.name, exc)

    try:
        async with anyio.create_task_group() as group:
            if progress is not None and ctx is not None:
                group.start_soon(_pump_progress, ctx, progress)
            # abandon_on_cancel: a cancelled call returns at once; the engine sees `cancel` and stops
            # at its next batch, keeping what it committed.
            outcome = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            group.cancel_scope.cancel()
    except anyio.get_cancelled_exc_class():
        cancel.set()
        raise
    if isinstance(outcome, str):
        return error_result(outcome)
    result, images = outcome
    if progress is not None and ctx is not None:
        await _send_progress(ctx, progress)  # the final count
    return CallToolResult(
        content=[TextContent(type="text", text=render(result)), *images],
        structured_content=result.model_dump(mode="json"),
    )


async def dry_run_preview(spec: ToolSpec, arguments: dict[str, Any], ctx: Context) -> str:
    """The tool's own ``dry_run`` report of the call, when it has that parameter (else empty)."""
    if "dry_run" not in {p.name for p in spec.parameters}:
        return ""
    source = ctx.request_context.lifespan_context
    headers = ctx.headers

    def work() -> str:
        try:
            result = spec.call(resolve_tools(source, headers), {**arguments, "dry_run": True})
        except Exception as exc:  # noqa: BLE001 - no preview then; the question still goes out
            logger.info("No dry-run preview of %s: %s", spec.name, exc)
            return ""
        return render(result)

    return await anyio.to_thread.run_sync(work)


def _adapter(spec: ToolSpec) -> Callable[..., Any]:
    """An async function with the tool's MCP signature, for ``add_tool`` to derive the schemas from."""

    async def adapter(ctx: Context, **arguments: Any) -> CallToolResult:
        answer: Answer | None = arguments.pop(CONFIRMATION_PARAMETER, None)
        if answer is not None and not confirmed(answer):
            return error_result(DECLINED_MESSAGE.format(name=spec.name))
        return await run_tool(spec, ctx.request_context.lifespan_context, arguments, ctx)

    parameters = [
        *spec.accepted,
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
    ]
    if spec.hints.needs_confirmation:  # the SDK asks the person first (see mcp_confirm) and passes the answer
        parameters.append(confirmation_parameter(spec, dry_run_preview))
    returns = Annotated[CallToolResult, spec.result_type]
    adapter.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    adapter.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    adapter.__name__ = adapter.__qualname__ = spec.name
    adapter.__doc__ = spec.description
    return adapter


def tool_annotations(spec: ToolSpec, *, llm_configured: bool) -> ToolAnnotations:
    """The four MCP behaviour hints of a tool, from its spec."""
    return ToolAnnotations(
        title=spec.title,
        read_only_hint=spec.hints.read_only,
        destructive_hint=spec.hints.destructive,
        idempotent_hint=spec.hints.idempotent,
        open_world_hint=spec.hints.open_world(llm_configured),
    )


# ---------------------------------------------------------------------------------- servers


def create_server(tools: ToolsSource | OpenTools, *, llm_configured: bool) -> ImageMCPServer:
    """An MCP server offering every tool.

    Args:
        tools: an :class:`ImageTools` (or a ``Future`` of one) used as is, or a callable returning an
            async context manager that opens them for the server's lifetime (see :func:`build_server`).
        llm_configured: whether the tools have an LLM; LLM-using tools are then open-world.
    """
    if callable(tools):
        open_tools = tools
    else:
        fixed = tools

        @asynccontextmanager
        async def open_tools() -> AsyncIterator[ToolsSource]:
            yield fixed

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[ToolsSource]:
        async with open_tools() as source:
            yield source

    server = ImageMCPServer(
        SERVER_NAME,
        title="img-agent image search",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
    )
    for spec in MCP_SPECS:
        server.add_tool(
            _adapter(spec),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=tool_annotations(spec, llm_configured=llm_configured),
            structured_output=True,
        )
    return server


def mcp_tool_list(*, llm_configured: bool = False) -> list[dict[str, Any]]:
    """The tools as MCP ``tools/list`` entries (wire field names), without starting a server."""
    server = create_server(Future(), llm_configured=llm_configured)
    listed = anyio.run(server.list_tools)
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]
