"""The web app of a store's service: the gallery (``/``, ``/static``), the REST API (``/api``) and MCP (``/mcp``).

:func:`build_web_app` composes them behind :class:`~img_agent.web.auth.WebGuard`. The MCP endpoint
is the same tool set as every other surface, over streamable HTTP, confined to the web client's
folders. Every API error is ``{"error": {"type", "message"}}`` (:mod:`img_agent.web.errors`); the
schemas are at ``/api/openapi.json`` and ``/api/docs``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from img_agent.errors import ImgAgentError, InvalidInputError, NotFoundError
from img_agent.tools.http_guard import MAX_HTTP_BODY_BYTES, transport_security
from img_agent.tools.image_tools import ImageTools
from img_agent.version import __version__
from img_agent.web import api_duplicates, api_images, api_index, api_search
from img_agent.web import api_notes
from img_agent.web import api_terms
from img_agent.web.auth import WebGuard, allowed_hosts
from img_agent.web.deps import WebDeps
from img_agent.web.errors import error_response
from img_agent.web.models import ErrorResponse

log = logging.getLogger(__name__)

STATIC = Path(str(files("img_agent.web") / "static"))
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                "form-action 'self'; frame-ancestors 'none'",
                "Referrer-Policy": "same-origin", "Cache-Control": "no-cache"}


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One sentence naming every problem of a request, and where the schemas are."""
    problems: list[str] = []
    for error in errors:
        if error.get("type") == "json_invalid":
            return "The request body is not valid JSON; send a JSON object (the schemas are at /api/docs)."
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        problem = f"'{where}' is required" if error.get("type") == "missing" else f"'{where}': {error.get('msg')}"
        if problem not in problems:
            problems.append(problem)
    return f"Invalid request: {'; '.join(problems)}. Fix it and send again (the schemas are at /api/docs)."


def _install_errors(app: FastAPI) -> None:
    async def domain(_request: Request, exc: Exception) -> Response:
        return error_response(exc)

    async def invalid(_request: Request, exc: Exception) -> Response:
        errors = exc.errors() if isinstance(exc, (RequestValidationError, ValidationError)) else []
        return error_response(InvalidInputError(validation_message(list(errors))))

    async def http(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        if code == 404:
            return error_response(NotFoundError(f"No such endpoint: {request.url.path}. The endpoints are listed at "
                                                "/api/docs."))
        if code == 405:
            return JSONResponse({"error": {"type": "InvalidInputError", "message": f"{request.method} is not allowed "
                                           f"on {request.url.path}; see /api/docs for its methods."}}, status_code=405)
        detail = str(getattr(exc, "detail", exc)).rstrip(". ")
        return JSONResponse({"error": {"type": "InvalidInputError", "message": f"{detail}. Fix the request and send "
                                       "it again (the endpoints and their bodies are at /api/docs)."}},
                            status_code=code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(exc)

    app.add_exception_handler(ImgAgentError, domain)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, unexpected)


def build_api(deps: WebDeps) -> FastAPI:
    """The gallery and the REST API (no MCP, no guard): what :func:`build_web_app` puts behind both."""
    app = FastAPI(title="img-agent", version=__version__, openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, responses={"default": {"model": ErrorResponse, "description": "An error"}})
    app.state.deps = deps
    _install_errors(app)
    for module in (api_search, api_images, api_index, api_duplicates, api_notes, api_terms):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def gallery() -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            raise NotFoundError("The gallery page is not installed (img_agent/web/static/index.html); the API at "
                                "/api works, see /api/docs.")
        return FileResponse(page, media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> Response:
        """The API reference, rendered in the browser from /api/openapi.json (offline: no external scripts)."""
        return FileResponse(STATIC / "docs.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


class _WebTools:
    """The MCP server's tools source: the web client's tools, whatever the request headers say."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps

    def tools_for_request(self, _headers: Mapping[str, str] | None) -> ImageTools:
        return self.deps.tools()


def build_web_app(deps: WebDeps, *, llm_configured: bool) -> Any:
    """The ASGI app of the web listener: MCP at ``/mcp``, the gallery and API everywhere else, all guarded."""
    from img_agent.tools.mcp_server import create_server

    server = create_server(_WebTools(deps), llm_configured=llm_configured)
    app = server.streamable_http_app(transport_security=transport_security(deps.host, deps.allowed_hosts),
                                     max_request_body_size=MAX_HTTP_BODY_BYTES)
    app.router.routes.append(Mount("/", app=build_api(deps)))
    return WebGuard(app, token=deps.token, hosts=allowed_hosts(deps.host, deps.allowed_hosts),
                    max_body=MAX_HTTP_BODY_BYTES)
