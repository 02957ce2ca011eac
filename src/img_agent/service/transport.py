"""HTTP over the service's Unix socket, with the standard library only (fast to import).

Every client of the service (the CLI, the stdio bridge, :func:`img_agent.connect`) speaks plain
HTTP/1.1 to it through :class:`UnixHTTPConnection`; server-sent events are read line by line
with :func:`iter_sse`.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "localhost"  # the Host header every client sends; the service accepts no other
CONNECT_ERRORS = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError,
                  http.client.RemoteDisconnected, http.client.BadStatusLine)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` to a Unix socket instead of a TCP port."""

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        super().__init__(HOST, timeout=timeout)
        self._socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def request_json(path: Path, method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
                 timeout: float | None = 30.0) -> tuple[int, Any]:
    """One request with a JSON body (or none); returns (status, decoded JSON or None)."""
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        head = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            head["Content-Type"] = "application/json"
        conn.request(method, url, body=data, headers=head)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def iter_sse(resp: http.client.HTTPResponse) -> Iterator[str]:
    """The ``data`` of each server-sent event of ``resp``, as the events arrive."""
    data: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            break
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
                data = []
        elif text.startswith("data:"):
            data.append(text[6:] if text[5:6] == " " else text[5:])
    if data:
        yield "\n".join(data)
