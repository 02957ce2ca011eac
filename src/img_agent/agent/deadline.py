"""Total time limits on LLM work: one request, and all the LLM work of one command.

Two limits hold at once:

- each request (one attempt) may take ``LLM_TIMEOUT`` seconds in all, from connecting to the last
  byte of the answer: :func:`run_with_deadline` runs it in a worker thread and abandons it at the
  deadline (closing its response), so a server trickling an answer byte by byte cannot hold a
  caller longer;
- all the LLM work of one command (an ``ask``, a ``search --expand``, one chat message: every
  request, retry and retry pause) may take ``LLM_DEADLINE`` seconds in all: an :class:`LLMBudget`,
  opened by :func:`llm_budget` at the start of the command and found by every call made inside
  it (a context variable, so concurrent commands in one process have their own).

Time spent outside LLM calls (searching, running a chat's tools, waiting for a person to confirm)
is not charged to the budget.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from img_agent.errors import LLMTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LLMBudget:
    """The seconds of LLM work one command may still use; thread-safe."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def spent(self) -> float:
        with self._lock:
            return self._spent

    def remaining(self) -> float:
        """Seconds left (never below zero)."""
        with self._lock:
            return max(0.0, self.seconds - self._spent)

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of LLM work against the budget."""
        with self._lock:
            self._spent += max(0.0, seconds)

    def exceeded(self, endpoint: str, last_failure: str | None = None) -> LLMTimeoutError:
        """The error raised once the budget is spent (``last_failure``: what the last attempt met)."""
        why = f"; last attempt: {last_failure}" if last_failure else ""
        return LLMTimeoutError(
            f"The LLM work of this command passed its deadline of {self.seconds:g} s (LLM_DEADLINE) "
            f"talking to {endpoint}{why}. Check that the server answers promptly, or raise LLM_DEADLINE."
        )


_ACTIVE: ContextVar[LLMBudget | None] = ContextVar("img_agent_llm_budget", default=None)


def active_budget() -> LLMBudget | None:
    """The budget of the command running in this context, if one is open."""
    return _ACTIVE.get()


@contextmanager
def llm_budget(seconds: float) -> Iterator[LLMBudget]:
    """Open a budget of ``seconds`` for the LLM work inside the block.

    Inside a block that already has one, the outer budget is kept: a command's budget covers the
    recipes it calls.
    """
    current = _ACTIVE.get()
    if current is not None:
        yield current
        return
    budget = LLMBudget(seconds)
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


class DeadlinePassed(Exception):
    """A call run by :func:`run_with_deadline` did not finish in time (it was abandoned)."""


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._cleanups: list[Callable[[], Any]] = []

    def on_abandon(self, cleanup: Callable[[], Any]) -> bool:
        """Register what frees the call's resources; ``False`` (and run it now) once abandoned."""
        with self._lock:
            if not self._abandoned:
                self._cleanups.append(cleanup)
                return True
        _quietly(cleanup)
        return False

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            _quietly(cleanup)


def _quietly(cleanup: Callable[[], Any]) -> None:
    try:
        cleanup()
    except Exception as exc:  # noqa: BLE001 - freeing an abandoned call's connection may fail in any way
        logger.debug("Cleaning up an abandoned call failed: %s", exc)


Work = Callable[[Callable[[Callable[[], Any]], bool]], T]
"""``work(on_abandon) -> value``; ``on_abandon(cleanup)`` registers how to cut the call short."""


def run_with_deadline(work: Work[T], seconds: float, *, name: str = "llm-request") -> T:
    """Run ``work`` in a daemon worker thread and return its value, or raise at the deadline.

    ``work`` gets an ``on_abandon(cleanup)`` function: it registers ``cleanup`` (e.g. closing the
    HTTP response) to run if the deadline passes, and returns ``False`` when it already has, so
    ``work`` should stop. An abandoned worker never blocks the interpreter's exit.

    Raises:
        DeadlinePassed: ``seconds`` passed first.
        BaseException: whatever ``work`` raised.
    """
    outcome: _Outcome[T] = _Outcome()

    def target() -> None:
        _worker.on_abandon = outcome.on_abandon
        try:
            outcome.value = work(outcome.on_abandon)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.error = exc
        finally:
            _worker.on_abandon = None
            outcome.done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    if not outcome.done.wait(max(0.0, seconds)):
        outcome.abandon()
        raise DeadlinePassed(f"no complete answer within {seconds:.3g} s")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]


def monotonic() -> float:
    """The clock every deadline uses."""
    return time.monotonic()


# ------------------------------------------------------------------------------ httpx connections

_worker = threading.local()
"""In a worker of :func:`run_with_deadline`: ``on_abandon``, for the hooks below."""


def shut_stream(stream: Any) -> None:
    """Shut an httpcore network stream's socket down: a read blocked on it in another thread returns at once."""
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def trace_connections(request: Any) -> None:
    """httpx ``request`` event hook: in a deadline worker, a connection opened for the request is
    shut down if the call is abandoned (the status line and headers may be trickling too)."""
    on_abandon = getattr(_worker, "on_abandon", None)
    if on_abandon is None:
        return

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            on_abandon(lambda: shut_stream(stream))

    request.extensions = {**request.extensions, "trace": trace}
