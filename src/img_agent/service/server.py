"""The resident service of one store: one engine, one model, every client at once.

It holds the store's lock for its whole life (a second service of the same store exits with
:data:`~img_agent.service.client.EXIT_ALREADY_SERVED`), listens on the store's Unix socket, and
serves there the MCP streamable-HTTP endpoint (``/mcp``, one session per stdio bridge) and the
small JSON interface the CLI and :func:`img_agent.connect` use (``/api/...``). On request
(``POST /api/service/web``) it also serves the web side (:mod:`img_agent.web`) on a TCP port. It
stops after ``idle_timeout`` seconds without requests or jobs (never while the web side is on or
folders are watched, :mod:`~img_agent.service.watcher`), on ``POST /api/service/stop`` and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img_agent.version import __version__
from img_agent.errors import ConfigError, ImgAgentError, InvalidInputError, StoreInUseError
from img_agent.service.client import EXIT_ALREADY_SERVED, LLM_HEADER, ROOTS_HEADER
from img_agent.service.paths import ServicePaths
from img_agent.service.routes import Tracked, api_routes
from img_agent.service.status import ModelState, ServiceStatus

if TYPE_CHECKING:
    from img_agent.config import LLMSettings, Settings
    from img_agent.index.engine import Engine
    from img_agent.service.watcher import ServiceWatch
    from img_agent.service.web_listener import WebListener
    from img_agent.tools.image_tools import ImageTools

log = logging.getLogger(__name__)

MODEL_WAIT = 2.0
"""Seconds a call that needs the model waits for it while it loads, before answering 'retry'."""
WATCH_INTERVAL = 1.0
LOG_MAX_BYTES = 10 * 1024 * 1024


def _json_header(raw: str | None, kind: type, name: str) -> Any:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise InvalidInputError(f"The {name} header must be a JSON {kind.__name__}.")
    return value


def _rss_bytes() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Activity:
    """Open requests by client, and when the last one ended (what the idle stop and status read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self.last = time.monotonic()

    @contextlib.contextmanager
    def request(self, client: str):  # noqa: ANN201 - a context manager
        with self._lock:
            self._open[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._open[client] -= 1
                if not self._open[client]:
                    del self._open[client]
                self.last = time.monotonic()

    def clients(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def open_requests(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def idle_for(self) -> float:
        return 0.0 if self.open_requests() else time.monotonic() - self.last


class Service:
    """The engine, the tools and the jobs of one store, shared by every client."""

    def __init__(self, settings: Settings, llm_settings: LLMSettings, *, idle_timeout: float) -> None:
        from img_agent.index.engine import Engine
        from img_agent.tools.jobs import JobRegistry

        self.settings = settings
        self.llm_settings = llm_settings
        self.paths = ServicePaths.of(settings.data_dir)
        self.idle_timeout = idle_timeout
        self.started = time.time()
        self.activity = Activity()
        self.jobs = JobRegistry()
        self.engine: Engine = Engine.open(settings, model_wait=MODEL_WAIT)
        self._tools: dict[tuple[str, str | None], ImageTools] = {}
        self._tools_lock = threading.Lock()
        self.model = ModelState(name=self.engine.model, pretrained=self.engine.pretrained, state="loading")
        self._model_started = time.monotonic()
        self.stop_requested = threading.Event()
        self.web: WebListener | None = None
        """The HTTP listener for browsers and API clients, once started (:func:`~img_agent.service.web_listener.start_web`)."""
        self.web_token: str | None = None
        self.web_lock = threading.Lock()
        self.watch: ServiceWatch | None = None
        """The watch of ``settings.watch_folders``, once started (:mod:`~img_agent.service.watcher`)."""

    def tools_for_request(self, headers: Mapping[str, str] | None) -> ImageTools:
        """The tools for one client's call: confined to the folders its roots header names (default: the
        store's default folders, as they are now), with the LLM its LLM header configures over the service's."""
        from img_agent.tools.image_tools import default_roots

        roots = headers.get(ROOTS_HEADER) if headers is not None else None
        llm = headers.get(LLM_HEADER) if headers is not None else None
        folders = _json_header(roots, list, ROOTS_HEADER)
        if folders is None:
            folders = [str(p) for p in default_roots(self.engine)]  # folders indexed since are allowed too
        key = (json.dumps(folders), llm or None)
        with self._tools_lock:
            tools = self._tools.get(key)
        if tools is None:
            tools = self._build_tools(folders, _json_header(llm, dict, LLM_HEADER))
            with self._tools_lock:
                tools = self._tools.setdefault(key, tools)
        return tools

    def _build_tools(self, roots: list, llm_overrides: dict | None) -> ImageTools:
        from img_agent.agent.llm import LLMClient
        from img_agent.config import LLMSettings
        from img_agent.tools.image_tools import ImageTools, default_sandbox

        if not all(isinstance(r, str) for r in roots):
            raise InvalidInputError(f"{ROOTS_HEADER} must be a JSON list of folder paths.")
        settings = self.llm_settings
        if llm_overrides:
            try:
                settings = LLMSettings(**{**self.llm_settings.model_dump(), **llm_overrides})
            except ValueError as exc:
                raise ConfigError(f"Invalid LLM settings from the client ({exc}); fix its --llm-* flags.") from None
        sandbox = default_sandbox(self.engine, [Path(r) for r in roots])
        return ImageTools(self.engine, sandbox, llm=LLMClient.from_settings(settings), jobs=self.jobs)

    def load_model(self) -> None:
        """Load the model (a background thread at start)."""
        try:
            self.engine.warm_up()
        except Exception as exc:  # noqa: BLE001 - calls that need the model report it too
            log.error("Loading the CLIP model failed: %s", exc, exc_info=not isinstance(exc, ImgAgentError))
            self.model = self.model.model_copy(update={"state": "failed", "error": str(exc),
                                                       "seconds": round(time.monotonic() - self._model_started, 2)})
        else:
            seconds = round(time.monotonic() - self._model_started, 2)
            log.info("model %s ready (%.1f s)", self.engine.model, seconds)
            self.model = self.model.model_copy(update={"state": "ready", "seconds": seconds})

    def status(self) -> ServiceStatus:
        model = self.model
        if model.state == "loading":
            model = model.model_copy(update={"seconds": round(time.monotonic() - self._model_started, 2)})
        return ServiceStatus(
            pid=os.getpid(), version=__version__, data_dir=str(self.paths.data_dir), socket=str(self.paths.socket),
            log=str(self.paths.log), started=self.started, uptime_s=round(time.time() - self.started, 2),
            clients=self.activity.clients(), open_requests=self.activity.open_requests(),
            idle_for_s=round(self.activity.idle_for(), 2), idle_timeout_s=self.idle_timeout,
            memory_rss_bytes=_rss_bytes(), model=model, jobs=self.jobs.list(),
            watching=self.watch.folders if self.watch is not None else [],
        )

    def idle(self) -> bool:
        """Whether to stop for idleness: never while the web listener is on (a browser may come back) or
        folders are watched."""
        return (self.idle_timeout > 0 and self.web is None and self.watch is None and not self.jobs.running()
                and self.activity.idle_for() >= self.idle_timeout)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.web is not None:
            self.web.stop()
        self.jobs.cancel_all(wait=10.0)
        with contextlib.suppress(OSError):
            if self.paths.socket.exists():
                self.paths.socket.unlink()
        self.engine.close()


# ------------------------------------------------------------------------------------ the app


def build_app(service: Service) -> Any:
    """The ASGI app: MCP at ``/mcp`` and the JSON interface at ``/api``, on one Starlette app."""
    from mcp.server.transport_security import TransportSecuritySettings

    from img_agent.tools.http_guard import MAX_HTTP_BODY_BYTES, HttpGuard
    from img_agent.tools.mcp_server import create_server

    server = create_server(service, llm_configured=service.llm_settings.enabled)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["localhost"],
                                         allowed_origins=[])
    app = server.streamable_http_app(transport_security=security, session_idle_timeout=None,
                                     max_request_body_size=MAX_HTTP_BODY_BYTES)
    app.router.routes.extend(api_routes(service))
    return Tracked(HttpGuard(app), service.activity)


def _listen(path: Path) -> socket.socket:
    """The service's listening socket at ``path``, readable and writable by its owner only."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead service's socket: this process holds the store now
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _rotate_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_MAX_BYTES:
            path.replace(path.with_suffix(".log.1"))


def run_service(settings: Settings, llm_settings: LLMSettings) -> int:
    """Serve the store until idle, stopped or signalled; returns the process exit status."""
    import uvicorn

    from img_agent.service.watcher import ServiceWatch

    paths = ServicePaths.of(settings.data_dir)
    paths.ensure_runtime_dir()
    try:
        service = Service(settings, llm_settings, idle_timeout=settings.service_idle_timeout)
    except StoreInUseError as exc:
        log.info("not starting: %s", exc)
        return EXIT_ALREADY_SERVED
    _rotate_log(paths.log)
    try:
        app = build_app(service)
        listener = _listen(paths.socket)
        config = uvicorn.Config(app, fd=listener.fileno(), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=3, access_log=False)
        server = uvicorn.Server(config)
        threading.Thread(target=service.load_model, name="img-agent-model", daemon=True).start()
        service.watch = ServiceWatch.start_for(service)

        def watch() -> None:
            while not server.should_exit:
                if service.stop_requested.is_set():
                    log.info("stop requested")
                    server.should_exit = True
                elif service.idle():
                    log.info("idle for %.0f s; stopping", service.idle_timeout)
                    server.should_exit = True
                service.stop_requested.wait(WATCH_INTERVAL)

        threading.Thread(target=watch, name="img-agent-idle", daemon=True).start()
        log.info("img-agent %s serving %s on %s (pid %d)", __version__, paths.data_dir, paths.socket, os.getpid())
        try:
            server.run()
        finally:
            listener.close()
    finally:
        service.close()
        log.info("service stopped")
    return 0
