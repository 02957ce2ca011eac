"""img-agent's tools as an MCP server (official ``mcp`` SDK 2.x), over stdio or streamable HTTP.

Each tool of :data:`~img_agent.tools.definitions.TOOL_SPECS` is registered with ``add_tool`` through
a generated adapter whose signature is the tool's own parameters (plus the thumbnail options for
tools that show images) and whose return annotation is ``Annotated[CallToolResult, ResultModel]``:
the SDK derives the input and output schemas from it. The title, description and annotations
come from the same spec.

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

import base64
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
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel

from img_agent import __version__
from img_agent.config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT
from img_agent.errors import ImgAgentError, StoreError
from img_agent.results import SearchHit
from img_agent.tools.definitions import (
    MAX_THUMBNAIL_BYTES_TOTAL,
    THUMBNAIL_QUALITY,
    TOOL_SPECS,
    AnswerResult,
    ImageTools,
    SearchResult,
    ToolsSource,
    ToolSpec,
    default_sandbox,
    error_message,
    get_spec,
    resolve_tools,
)
from img_agent.tools.render import render

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
            spec = get_spec(name)
            parsed = spec.parse(arguments, "mcp")
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


def _shown_images(result: BaseModel) -> Sequence[SearchHit]:
    if isinstance(result, SearchResult):
        return result.hits
    if isinstance(result, AnswerResult):
        return result.sources
    raise TypeError(f"{type(result).__name__} lists no images")


def thumbnail_blocks(tools: ImageTools, result: BaseModel, count: int, max_side: int) -> list[ContentBlock]:
    """Caption + JPEG thumbnail blocks for the first ``count`` images of ``result``.

    An image whose thumbnail cannot be made (file gone, undecodable) gets a one-line note instead;
    thumbnails stop once their bytes add up to :data:`MAX_THUMBNAIL_BYTES_TOTAL`.
    """
    blocks: list[ContentBlock] = []
    total = 0
    for hit in _shown_images(result)[:count]:
        try:
            data = tools.engine.thumbnail(hit.id, max_side=max_side, quality=THUMBNAIL_QUALITY)
        except ImgAgentError as exc:
            blocks.append(TextContent(type="text", text=f"[{hit.rank}] id {hit.id}: no thumbnail ({exc})"))
            continue
        if total + len(data) > MAX_THUMBNAIL_BYTES_TOTAL:
            blocks.append(TextContent(type="text", text="(further thumbnails left out: size limit reached)"))
            break
        total += len(data)
        blocks.append(TextContent(type="text", text=f"[{hit.rank}] id {hit.id}: {hit.path}"))
        blocks.append(ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/jpeg"))
    return blocks


async def run_tool(spec: ToolSpec, source: ToolsSource, arguments: dict[str, Any], ctx: Context | None) -> CallToolResult:
    """Run one validated call in a worker thread: progress while it runs, cancellation when the
    client cancels, thumbnails for tools that show images, and every failure as an ``isError`` result."""
    cancel = threading.Event()
    progress = _LatestProgress() if "progress" in spec.injected else None

    def work() -> tuple[BaseModel, list[ContentBlock]] | str:
        try:
            tools = resolve_tools(source)
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
        *spec.surface_parameters("mcp"),
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
    for spec in TOOL_SPECS:
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


if __name__ == "__main__":  # python -m img_agent.tools.mcp_server [options]  ==  img-agent serve [options]
    from img_agent.cli.tools import main

    raise SystemExit(main())
