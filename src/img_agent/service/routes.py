"""The service's JSON interface (``/api/...``) and its error mapping: what the CLI and ``connect()`` call.

Errors are ``{"error": {"type", "message"}}`` with a fitting HTTP status; the message says what to
do, as the tools' messages do.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from img_agent.version import __version__
from img_agent.errors import ImgAgentError, InvalidInputError
from img_agent.service.client import CLIENT_HEADER, PROTOCOL
from img_agent.web.errors import error_response

if TYPE_CHECKING:
    from img_agent.service.server import Activity, Service

log = logging.getLogger(__name__)


def api_routes(service: Service) -> list[Any]:
    """The JSON interface: health, status and stop, the web listener, tool calls, raw function calls, recipes, jobs."""
    from pydantic import ValidationError
    from starlette.routing import Route

    from img_agent.service.recipes import QA_PATH, RAG_PATH, QARequest, RagRequest
    from img_agent.tools.image_tools import get_spec

    async def health(_request: Request) -> Response:
        return JSONResponse({"service": "img-agent", "version": __version__, "protocol": PROTOCOL, "pid": os.getpid(),
                             "data_dir": str(service.paths.data_dir), "model": service.engine.model})

    async def status(_request: Request) -> Response:
        return JSONResponse(service.status().model_dump(mode="json"))

    async def stop(_request: Request) -> Response:
        service.stop_requested.set()
        return JSONResponse({"stopping": True, "pid": os.getpid()})

    async def call_tool(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            raw = await request.body()
            arguments = json.loads(raw) if raw.strip() else {}
            tools = service.tools_for_request(request.headers)
            spec = get_spec(name)
            parsed = spec.parse(arguments)
            result = await anyio.to_thread.run_sync(lambda: spec.call(tools, parsed))
        except ValueError as exc:
            if isinstance(exc, ImgAgentError):
                return error_response(exc)
            return error_response(InvalidInputError(f"The request body is not JSON ({exc}); send the arguments as "
                                                    "a JSON object."))
        except Exception as exc:  # noqa: BLE001 - every failure is a JSON error; unexpected ones are logged
            if not isinstance(exc, ImgAgentError):
                log.exception("tool %s failed", name)
            return error_response(exc)
        return JSONResponse(result.model_dump(mode="json"))

    async def dispatch(request: Request) -> Response:
        """A model's raw function call, answered as the OpenAI dispatcher answers it (for the chat loop)."""
        from img_agent.tools.openai_tools import dispatch as dispatch_call

        try:
            tools = service.tools_for_request(request.headers)
        except ImgAgentError as exc:
            return error_response(exc)
        raw = (await request.body()).decode("utf-8", "replace")
        text = await anyio.to_thread.run_sync(lambda: dispatch_call(tools, request.path_params["name"], raw))
        return Response(text, media_type="application/json")

    def recipe(model: type[RagRequest] | type[QARequest]) -> Any:
        async def run(request: Request) -> Response:
            try:
                body = model.model_validate_json(await request.body())
                tools = service.tools_for_request(request.headers)
                # the model first: a recipe calls the LLM before it encodes, and must not be retried half-way
                await anyio.to_thread.run_sync(tools.engine.warm_up)
                # thumbnails for the LLM are read inside the client's allowed folders only
                result = await anyio.to_thread.run_sync(lambda: body.run(tools.images, tools.llm))
            except ValidationError as exc:
                return error_response(InvalidInputError(f"Invalid request: {exc.errors(include_url=False)}"))
            except Exception as exc:  # noqa: BLE001 - every failure is a JSON error; unexpected ones are logged
                if not isinstance(exc, ImgAgentError):
                    log.exception("%s failed", request.url.path)
                return error_response(exc)
            return JSONResponse(result.model_dump(mode="json"))

        return run

    async def backup(request: Request) -> Response:
        """A consistent copy of the store (the service holds its lock): ``{"dest": FOLDER}``."""
        try:
            body = json.loads(await request.body() or b"{}")
            dest = body.get("dest") if isinstance(body, dict) else None
            if not isinstance(dest, str) or not dest:
                raise InvalidInputError('Send the backup folder as {"dest": "/absolute/path"}.')
            report = await anyio.to_thread.run_sync(lambda: service.engine.backup(dest))
        except Exception as exc:  # noqa: BLE001 - every failure is a JSON error; unexpected ones are logged
            if isinstance(exc, ValueError) and not isinstance(exc, ImgAgentError):
                exc = InvalidInputError(f"The request body is not JSON ({exc}).")
            elif not isinstance(exc, ImgAgentError):
                log.exception("backup failed")
            return error_response(exc)
        return JSONResponse(report.model_dump(mode="json"))

    async def web(request: Request) -> Response:
        """Turn the web listener on (``{"host", "port"}``) or find it on: its URL with the token."""
        from img_agent.service.web_listener import DEFAULT_HOST, DEFAULT_PORT, start_web

        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise InvalidInputError('Send {"host": ..., "port": ...} as a JSON object.')
            host, port = body.get("host") or DEFAULT_HOST, body.get("port", DEFAULT_PORT)
            if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise InvalidInputError("host must be an address and port a number 0-65535 (0 = any free port).")
            listener = await anyio.to_thread.run_sync(lambda: start_web(service, host, port))
        except Exception as exc:  # noqa: BLE001 - every failure is a JSON error; unexpected ones are logged
            if isinstance(exc, ValueError) and not isinstance(exc, ImgAgentError):
                exc = InvalidInputError(f"The request body is not JSON ({exc}).")
            elif not isinstance(exc, ImgAgentError):
                log.exception("starting the web listener failed")
            return error_response(exc)
        return JSONResponse(listener.info())

    async def jobs(_request: Request) -> Response:
        return JSONResponse([j.model_dump(mode="json") for j in service.jobs.list()])

    async def job(request: Request) -> Response:
        try:
            return JSONResponse(service.jobs.info(request.path_params["job_id"]).model_dump(mode="json"))
        except ImgAgentError as exc:
            return error_response(exc)

    async def cancel_job(request: Request) -> Response:
        try:
            return JSONResponse(service.jobs.cancel(request.path_params["job_id"]).model_dump(mode="json"))
        except ImgAgentError as exc:
            return error_response(exc)

    return [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/service", status, methods=["GET"]),
        Route("/api/service/stop", stop, methods=["POST"]),
        Route("/api/tools/{name}", call_tool, methods=["POST"]),
        Route("/api/tools/{name}/dispatch", dispatch, methods=["POST"]),
        Route(RAG_PATH, recipe(RagRequest), methods=["POST"]),
        Route(QA_PATH, recipe(QARequest), methods=["POST"]),
        Route("/api/store/backup", backup, methods=["POST"]),
        Route("/api/service/web", web, methods=["POST"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", job, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    ]


class Tracked:
    """ASGI middleware: counts each HTTP request as activity of its client."""

    def __init__(self, app: Any, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = "unknown"
        for key, value in scope.get("headers", []):
            if key.decode("latin-1").lower() == CLIENT_HEADER.lower():
                client = value.decode("latin-1")[:100]
        with self.activity.request(client):
            await self.app(scope, receive, send)
