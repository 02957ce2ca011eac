"""The service's HTTP listener for browsers and API clients, on a TCP port beside its Unix socket.

Started on demand (``POST /api/service/web`` on the socket, from ``img-agent web``), it serves
:func:`img_agent.web.app.build_web_app` with its own uvicorn server in a thread of the service
process, over the same engine, tools and jobs. One token per service process guards it; a
non-loopback address is allowed (the token always applies) and logged as a warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from img_agent.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from img_agent.service.server import Service

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
START_TIMEOUT = 15.0
def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a busy port or an unknown address is a ConfigError naming the flag."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"Cannot listen on {host!r} ({exc.strerror}); give an address of this machine with "
                          "--host (default 127.0.0.1).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"Port {port} on {host} is in use by another program; choose another with --port "
                              "(or stop that program).") from None
        raise ConfigError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or "
                          "--port.") from None
    return sock


class WebListener:
    """One running HTTP listener: its uvicorn server, thread and address."""

    def __init__(self, app: Any, host: str, port: int, token: str) -> None:
        import uvicorn

        self.host = host
        self.token = token
        self._socket = _bind(host, port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3,
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="img-agent-web", daemon=True)

    def start(self) -> WebListener:
        from img_agent.tools.http_guard import is_loopback

        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"The web listener on {self.host}:{self.port} did not start; see the service log.")
            time.sleep(0.02)
        if not is_loopback(self.host):
            log.warning("web listener on %s:%d is reachable from other machines; the token guards it", self.host,
                        self.port)
        log.info("web listener on http://%s:%d/", self.host, self.port)
        return self

    def info(self) -> dict[str, Any]:
        """What ``img-agent web`` prints: the URL with the token, the token, the address."""
        from img_agent.tools.http_guard import is_loopback

        shown = DEFAULT_HOST if self.host in ("0.0.0.0", "", "::") else self.host
        shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        return {"url": f"http://{shown}:{self.port}/?token={self.token}", "token": self.token, "host": self.host,
                "port": self.port, "loopback": is_loopback(self.host)}

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._socket.close()


def start_web(service: Service, host: str, port: int) -> WebListener:
    """The service's web listener, started on ``host:port`` unless one runs already (then that one)."""
    from img_agent.tools.http_guard import new_token
    from img_agent.web.app import build_web_app
    from img_agent.web.deps import WebDeps
    from img_agent.web.models import ModelInfo
    from img_agent.web.thumbs import ThumbnailCache

    with service.web_lock:
        if service.web is not None:
            return service.web
        if service.web_token is None:
            service.web_token = new_token()

        def model() -> ModelInfo:
            state = service.model
            return ModelInfo(name=state.name, state=state.state, message=state.error)

        read_only = service.engine.read_only
        thumbs = (service.paths.socket.parent / f"{service.paths.socket.stem}.thumbs" if read_only
                  else service.paths.data_dir / "thumbs")
        llm = service.llm_settings
        deps = WebDeps(tools=lambda: service.tools_for_request(None), model=model,
                       llm_model=llm.model if llm.enabled else None, thumbs=ThumbnailCache(thumbs),
                       token=service.web_token, host=host, allowed_hosts=tuple(service.settings.http_allowed_hosts))
        app = build_web_app(deps, llm_configured=llm.enabled)
        service.web = WebListener(app, host, port, service.web_token).start()
        return service.web
