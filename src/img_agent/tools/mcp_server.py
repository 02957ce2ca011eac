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

The server's lifespan opens the one :class:`~img_agent.index.engine.Engine` in a background
thread and then loads the CLIP model there too, so ``initialize`` and ``tools/list`` answer at
once; a call that arrives earlier waits for the engine in its worker thread. Importing this
module imports neither torch nor faiss nor openai.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from img_agent import __version__
from img_agent.config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT
from img_agent.errors import ImgAgentError, StoreError
from img_agent.tools.image_tools import TOOL_SPECS, ImageTools, default_sandbox, get_spec
from img_agent.tools.render import render, thumbnail_blocks
from img_agent.tools.spec import ToolSpec, error_message

if TYPE_CHECKING:
    from img_agent.config import LLMSettings, Settings

logger = logging.getLogger(__name__)

SERVER_NAME = "img-agent"
PROGRESS_INTERVAL = 0.25
"""Seconds between progress notifications of one call."""
CLOSE_WAIT = 0.5
"""Seconds the shutdown waits for the engine to finish opening and loading the model."""

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

ToolsSource = ImageTools | Future  # a Future[ImageTools] while the engine is still opening
OpenTools = Callable[[], AbstractAsyncContextManager[ToolsSource]]
"""Opens the tools for the server's lifetime (the lifespan): yields ImageTools or a Future of them."""


class ImageMCPServer(MCPServer):
    """An :class:`MCPServer` that validates calls to img-agent tools with the shared spec first.

    Validation failures and unknown tool names become ``isError`` results carrying exactly the
    message :func:`~img_agent.tools.openai_tools.dispatch` returns for the same call.
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        try:
            get_spec(name)  # an unknown name: the error names the tools that exist
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

    def work() -> tuple[BaseModel, list[ContentBlock]] | str:
        try:
            tools = source.result() if isinstance(source, Future) else source  # waits for the engine to open
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


def _adapter(spec: ToolSpec) -> Callable[..., Any]:
    """An async function with the tool's MCP signature, for ``add_tool`` to derive the schemas from."""

    async def adapter(ctx: Context, **arguments: Any) -> CallToolResult:
        return await run_tool(spec, ctx.request_context.lifespan_context, arguments, ctx)

    parameters = [
        *spec.accepted,
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
    ]
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


def build_server(
    settings: Settings,
    *,
    roots: Sequence[Path] | None = None,
    llm_settings: LLMSettings | None = None,
) -> ImageMCPServer:
    """The real server: one engine for ``settings``, opened and warmed up in the background.

    Args:
        settings: engine settings (data directory, model ...).
        roots: folders the tools may read; default: ``settings.image_roots`` plus every folder
            ever indexed into this store.
        llm_settings: the LLM for ``ask_about_images`` and query expansion; ``None`` or not
            enabled = no LLM.
    """
    llm_on = bool(llm_settings is not None and llm_settings.enabled)

    @asynccontextmanager
    async def open_tools() -> AsyncIterator[ToolsSource]:
        future: Future[ImageTools] = Future()
        opener = threading.Thread(
            target=_open_tools, args=(future, settings, roots, llm_settings if llm_on else None),
            name="img-agent-open", daemon=True,
        )
        opener.start()
        try:
            yield future
        finally:
            await anyio.to_thread.run_sync(_close_tools, future, opener)

    return create_server(open_tools, llm_configured=llm_on)


def _open_tools(
    future: Future[ImageTools], settings: Settings, roots: Sequence[Path] | None, llm_settings: LLMSettings | None
) -> None:
    """Open the engine, build the tools, hand them over, then load the model (background thread)."""
    try:
        from img_agent.index.engine import Engine  # faiss, numpy: after the server is up

        engine = Engine.open(settings)
        try:
            llm = None
            if llm_settings is not None:
                from img_agent.agent.llm import LLMClient

                llm = LLMClient.from_settings(llm_settings)
            tools = ImageTools(engine, default_sandbox(engine, roots), llm=llm)
        except BaseException:
            engine.close()
            raise
    except ImgAgentError as exc:
        logger.error("Cannot open the image index: %s", exc)
        future.set_exception(exc)
        return
    except Exception as exc:  # noqa: BLE001 - every tool call reports it; the traceback goes to the log
        logger.exception("Cannot open the image index in %s", settings.data_dir)
        future.set_exception(
            StoreError(f"The image index in {settings.data_dir} could not be opened ({type(exc).__name__}: {exc}); see the server log.")
        )
        return
    future.set_result(tools)
    roots_text = tools.sandbox.describe_roots()
    logger.info("Index %s open (%s); loading model %s", settings.data_dir, roots_text, settings.model)
    try:
        engine.warm_up()
    except Exception as exc:  # noqa: BLE001 - the calls that need the model will report it
        logger.error("Loading the CLIP model failed: %s", exc, exc_info=not isinstance(exc, ImgAgentError))
    else:
        logger.info("Model %s loaded", settings.model)


def _close_tools(future: Future[ImageTools], opener: threading.Thread) -> None:
    """Close the engine at shutdown, unless it is still opening or loading the model: then the
    process exit releases it (every acknowledged write is already durable)."""
    opener.join(timeout=CLOSE_WAIT)
    if opener.is_alive():
        logger.info("The index or model was still loading at shutdown; leaving it to the process exit")
        return
    try:
        tools = future.result(timeout=0)
    except Exception:  # noqa: BLE001 - opening failed and was reported then
        return
    tools.engine.close()


def mcp_tool_list(*, llm_configured: bool = False) -> list[dict[str, Any]]:
    """The tools as MCP ``tools/list`` entries (wire field names), without starting a server."""
    server = create_server(Future(), llm_configured=llm_configured)
    listed = anyio.run(server.list_tools)
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed]


def serve(
    settings: Settings,
    *,
    roots: Sequence[Path] | None = None,
    llm_settings: LLMSettings | None = None,
    http: bool = False,
    host: str = DEFAULT_HTTP_HOST,
    port: int = DEFAULT_HTTP_PORT,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is interrupted (HTTP)."""
    server = build_server(settings, roots=roots, llm_settings=llm_settings)
    if not http:
        server.run()
        return
    if not _is_loopback(host):
        logger.warning(
            "Serving on %s: the MCP endpoint has no authentication; anyone who can reach it can search "
            "and index images in the allowed folders.", host,
        )
    logger.info("MCP endpoint: http://%s:%d/mcp", host if ":" not in host else f"[{host}]", port)
    server.run("streamable-http", host=host, port=port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

