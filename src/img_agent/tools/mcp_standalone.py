"""A standalone MCP server that opens the store itself (``img-agent serve --http``).

The engine opens and the CLIP model loads in a background thread, so ``initialize`` and
``tools/list`` answer at once; a call that arrives earlier waits for the engine in its worker thread.

Over HTTP the Host/Origin allow-list is always on (:func:`~img_agent.tools.http_guard.transport_security`),
request bodies are bounded with a readable error, and a non-loopback bind requires a bearer token
(:func:`http_token` decides it; the command line shows it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from img_agent.locations import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT
from img_agent.errors import ConfigError, ImgAgentError, StoreError
from img_agent.tools.http_guard import MAX_HTTP_BODY_BYTES, HttpGuard, is_loopback, new_token, transport_security
from img_agent.tools.image_tools import ImageTools, default_sandbox
from img_agent.tools.mcp_server import ImageMCPServer, ToolsSource, create_server

if TYPE_CHECKING:
    from img_agent.config import LLMSettings, Settings

logger = logging.getLogger(__name__)

CLOSE_WAIT = 0.5
"""Seconds the shutdown waits for the engine to finish opening and loading the model."""


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


def http_token(host: str, token: str | None) -> str | None:
    """The bearer token an HTTP server on ``host`` requires: ``token`` when given, a new random one for a
    non-loopback address, else none (loopback serves this machine's users only)."""
    if token:
        return token
    return None if is_loopback(host) else new_token()


def serve(
    settings: Settings,
    *,
    roots: Sequence[Path] | None = None,
    llm_settings: LLMSettings | None = None,
    http: bool = False,
    host: str = DEFAULT_HTTP_HOST,
    port: int = DEFAULT_HTTP_PORT,
    token: str | None = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is interrupted (HTTP).

    Over HTTP, ``token`` (see :func:`http_token`) is required as ``Authorization: Bearer``; a
    non-loopback ``host`` without one is refused.

    Raises:
        ConfigError: a non-loopback ``host`` without a token.
    """
    server = build_server(settings, roots=roots, llm_settings=llm_settings)
    if not http:
        server.run()
        return
    import uvicorn

    app = http_app(server, settings, host=host, port=port, token=token)
    config = uvicorn.Config(app, host=host, port=port, log_level=server.settings.log_level.lower())
    uvicorn.Server(config).run()


def http_app(server: ImageMCPServer, settings: Settings, *, host: str, port: int, token: str | None) -> Any:
    """The guarded ASGI app of ``server`` for an HTTP listener on ``host``: the Host/Origin allow-list
    always, the bearer ``token`` when given.

    Raises:
        ConfigError: a non-loopback ``host`` without a token.
    """
    if token is None and not is_loopback(host):
        raise ConfigError(f"Serving on {host} needs a bearer token: pass --token or set IMG_AGENT_HTTP_TOKEN.")
    security = transport_security(host, settings.http_allowed_hosts)
    app = server.streamable_http_app(transport_security=security, max_request_body_size=MAX_HTTP_BODY_BYTES, host=host)
    logger.info("MCP endpoint: http://%s:%d/mcp (%s; accepted Host headers: %s; add more with "
                "IMG_AGENT_HTTP_ALLOWED_HOSTS)", host if ":" not in host else f"[{host}]", port,
                "bearer token required" if token else "no token: loopback only", ", ".join(security.allowed_hosts))
    return HttpGuard(app, token=token)

