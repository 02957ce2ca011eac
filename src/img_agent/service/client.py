"""Finding, starting, stopping and calling the service of a store.

:class:`ServiceClient` is what every front end uses: it connects to the store's socket and, when
nothing answers there (never started, killed, crashed) or the service is of another img-agent
version, starts a fresh one (detached, logging to ``DATA_DIR/service.log``, or beside its socket when the
store is read-only) and waits for it.
Clients racing to start the same store's service serialise on a start lock, and the service itself
only runs once it holds the store's lock, so one service serves a store whatever the races.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import img_agent.errors as errors
from img_agent.errors import (
    ImgAgentError,
    ModelLoadingError,
    ServiceError,
    StoreInUseError,
)
from img_agent.service.paths import ServicePaths
from img_agent.service.transport import CONNECT_ERRORS, open_request, request_json
from img_agent.version import __version__

log = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL = 1
"""Version of the service's HTTP interface; a client only talks to a service of its own version."""
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
HEALTH_TIMEOUT = 10.0
MODEL_LOAD_TIMEOUT = 600.0
"""Seconds a client call waits for the service's model to load (a call that needs it is retried)."""
MODEL_POLL_S = 0.5
EXIT_ALREADY_SERVED = 75
"""Exit status of a service process that found the store held by another process."""
HELD_GRACE = 10.0
"""Seconds a starting client waits for the holder of the store's lock to answer as its service."""
ROOTS_HEADER = "X-Img-Agent-Roots"
"""JSON list of the folders a client's tool calls may touch (absent: the store's default folders)."""
LLM_HEADER = "X-Img-Agent-LLM"
"""JSON object of LLM settings a client overrides for its calls (its --llm-* flags)."""
CLIENT_HEADER = "X-Img-Agent-Client"


class Health(NamedTuple):
    """What a running service says about itself."""

    version: str
    protocol: int
    pid: int
    data_dir: str
    model: str

    @property
    def compatible(self) -> bool:
        return self.version == __version__ and self.protocol == PROTOCOL


def _error_from(body: Any, status: int) -> ImgAgentError:
    """The service's JSON error as the exception it stood for."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    message = err.get("message") or f"the img-agent service answered HTTP {status}"
    cls = getattr(errors, str(err.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, ImgAgentError)):
        cls = ImgAgentError
    return cls(message)


class ServiceClient:
    """A client of the service of the store in ``data_dir``.

    Args:
        data_dir: the store.
        launch_args: command-line options for a service this client starts (model, device, LLM ...).
        client: a name for this client in ``service status`` (``cli``, ``bridge-1234`` ...).
        roots: folders this client's tool calls may touch; None = the service's default roots.
        llm: LLM settings this client's calls override (e.g. its ``--llm-*`` flags).
    """

    def __init__(self, data_dir: Path, *, launch_args: Sequence[str] = (), client: str = "python",
                 roots: Sequence[str] | None = None, llm: dict[str, Any] | None = None) -> None:
        self.paths = ServicePaths.of(data_dir)
        self.launch_args = list(launch_args)
        self.headers = {CLIENT_HEADER: f"{client}-{os.getpid()}"}
        if roots is not None:
            self.headers[ROOTS_HEADER] = json.dumps([str(r) for r in roots])
        if llm:
            self.headers[LLM_HEADER] = json.dumps(llm, default=str)
        self._up = False

    # -- finding and starting ---------------------------------------------------------------
    def health(self) -> Health | None:
        """The running service's health, or None when nothing answers on the socket."""
        try:
            status, body = request_json(self.paths.socket, "GET", "/api/health", timeout=HEALTH_TIMEOUT)
        except CONNECT_ERRORS:
            return None
        except TimeoutError as exc:
            raise ServiceError(
                f"The img-agent service of {self.paths.data_dir} does not answer (socket {self.paths.socket}). "
                f"Stop it with 'img-agent service stop' or end its process; its log is {self.paths.log}."
            ) from exc
        except OSError:
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        try:
            return Health(version=str(body["version"]), protocol=int(body["protocol"]), pid=int(body["pid"]),
                          data_dir=str(body["data_dir"]), model=str(body.get("model", "")))
        except (KeyError, TypeError, ValueError):
            return None

    def ensure(self) -> Health:
        """The service of this store, started (or replaced, if of another version) when needed."""
        self.paths.ensure_runtime_dir()  # a socket is trusted only in a folder closed to others
        health = self.health()
        if health is not None and health.compatible:
            self._up = True
            return health
        with self._start_lock():
            health = self.health()
            if health is not None and not health.compatible:
                log.info("replacing the img-agent %s service (pid %d) by version %s", health.version, health.pid,
                         __version__)
                self._stop(health)
                health = None
            if health is None:
                health = self._start()
        self._up = True
        return health

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.paths.start_lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServiceError("Another client has been starting the img-agent service for over "
                                           f"{START_TIMEOUT:.0f} s; see {self.paths.log}.") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _start(self) -> Health:
        """Start the service detached and wait until it answers."""
        import subprocess

        cmd = [sys.executable, "-m", "img_agent", "--data-dir", str(self.paths.data_dir), *self.launch_args,
               "service", "start", "--foreground"]
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        # never through a symbolic link planted at the log's place
        try:
            fd = os.open(self.paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise ServiceError(f"Cannot write the service log {self.paths.log} ({exc.strerror or exc}); if it is a "
                               "symbolic link or not yours, remove it.") from exc
        with open(fd, "ab") as logfile:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, cwd="/",
                                    start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT
        held_since: float | None = None
        while time.monotonic() < deadline:
            health = self.health()
            if health is not None:
                return health
            code = proc.poll()
            if code == EXIT_ALREADY_SERVED:
                # another process holds the store: a service about to answer, or a program that opened it itself
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since > HELD_GRACE:
                    raise StoreInUseError(
                        f"The store {self.paths.data_dir} is held by another process (pid {_lock_holder(self.paths)}) "
                        "that is not its service: a program that opened it directly (--no-service, Engine.open). "
                        "Let it finish, or stop it."
                    )
            elif code is not None:
                raise ServiceError(
                    f"The img-agent service for {self.paths.data_dir} stopped while starting (exit status {code}): "
                    f"{self._log_tail()} Full log: {self.paths.log}."
                )
            time.sleep(0.05)
        raise ServiceError(f"The img-agent service for {self.paths.data_dir} did not answer within "
                           f"{START_TIMEOUT:.0f} s; see {self.paths.log}.")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.paths.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def _stop(self, health: Health) -> None:
        """Ask the service to stop and wait for its process to end (ended by a signal if it will not)."""
        import signal

        with contextlib.suppress(*CONNECT_ERRORS, OSError):
            request_json(self.paths.socket, "POST", "/api/service/stop", {}, headers=self.headers, timeout=5)
        if not wait_for_exit(health.pid, STOP_TIMEOUT):
            log.warning("the img-agent service (pid %d) did not stop; ending it", health.pid)
            with contextlib.suppress(OSError):
                os.kill(health.pid, signal.SIGTERM)
            if not wait_for_exit(health.pid, 5.0):
                with contextlib.suppress(OSError):
                    os.kill(health.pid, signal.SIGKILL)
                wait_for_exit(health.pid, 5.0)

    def stop(self) -> Health | None:
        """Stop the running service; returns what it said about itself, or None if none ran."""
        health = self.health()
        if health is not None:
            self._stop(health)
        self._up = False
        return health

    # -- calling ----------------------------------------------------------------------------
    def request(self, method: str, url: str, body: Any = None, *, timeout: float | None = None) -> Any:
        """One call to the service; a service found gone is started again and the call retried once, and
        a call that needs the model while it loads is retried until it has loaded."""

        def once() -> Any:
            status, data = request_json(self.paths.socket, method, url, body, headers=self.headers, timeout=timeout)
            if status >= 400:
                raise _error_from(data, status)
            return data

        return self._call(once)

    def _call(self, once: Callable[[], T]) -> T:
        if not self._up:
            self.ensure()
        deadline = time.monotonic() + MODEL_LOAD_TIMEOUT
        while True:
            try:
                try:
                    return once()
                except CONNECT_ERRORS:
                    log.info("the img-agent service went away; starting it again and retrying once")
                    self._up = False
                    self.ensure()
                    return once()
            except ModelLoadingError:
                if time.monotonic() > deadline:
                    raise
                log.info("waiting for the CLIP model to load in the service")
                time.sleep(MODEL_POLL_S)

    def request_text(self, method: str, url: str, body: str) -> str:
        """A request whose body and answer are text as is (a model's raw function-call arguments)."""

        def once() -> str:
            resp = open_request(self.paths.socket, method, url, body.encode("utf-8"),
                                headers={"Content-Type": "application/json", **self.headers})
            text = resp.read().decode("utf-8", "replace")
            if resp.status >= 400:
                raise _error_from(json.loads(text) if text.strip().startswith("{") else None, resp.status)
            return text

        return self._call(once)

    def call_tool(self, name: str, arguments: dict[str, Any], *, timeout: float | None = None) -> Any:
        """Call tool ``name`` with JSON ``arguments``; returns its JSON result, raises its error."""
        return self.request("POST", f"/api/tools/{name}", arguments, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/api/service")


def _lock_holder(paths: ServicePaths) -> str:
    """The pid written in the store's lock file, or 'unknown'."""
    try:
        return (paths.data_dir / "lock").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a child of ours that ended is reaped here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        if done == pid:
            return False
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for process ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    return not is_alive(pid)
