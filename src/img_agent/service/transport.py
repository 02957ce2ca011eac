"""HTTP/1.1 over the service's Unix socket, in a few lines of the standard library (fast to import).

Every client of the service (the CLI, the stdio bridge, :func:`img_agent.connect`) sends one
request per connection (``Connection: close``) with :func:`open_request`, and reads the answer
whole (:meth:`Response.read`) or as it streams (:meth:`Response.lines`, for server-sent events,
whose ``data`` :func:`iter_sse` yields). Bodies may come chunked, with a length, or until close.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HOST = "localhost"  # the Host header every client sends; the service accepts no other


class ProtocolError(ConnectionError):
    """The other end answered something that is not HTTP (or hung up half-way)."""


CONNECT_ERRORS = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError,
                  ConnectionAbortedError, ProtocolError)
"""What a request raises when the service is not there, or went away while answering."""


class Response:
    """An HTTP response being read from its connection (closed by :meth:`close` or once read)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file: IO[bytes] = sock.makefile("rb")
        line = self._file.readline()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.close()
            raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            header = self._file.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def _chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self._file.readline()
                if not size_line:
                    raise ProtocolError("the connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self._file.readline()
                    return
                data = self._file.read(size)
                self._file.readline()
                yield data
        elif "content-length" in self.headers:
            remaining = int(self.headers["content-length"])
            while remaining > 0:
                data = self._file.read(min(remaining, 65536))
                if not data:
                    raise ProtocolError("the connection closed inside the body")
                remaining -= len(data)
                yield data
        else:
            while data := self._file.read1(65536):  # type: ignore[attr-defined]
                yield data

    def read(self) -> bytes:
        try:
            return b"".join(self._chunks())
        finally:
            self.close()

    def lines(self) -> Iterator[bytes]:
        """The body line by line, as it arrives (line ends kept)."""
        pending = b""
        try:
            for data in self._chunks():
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line + b"\n"
            if pending:
                yield pending
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def open_request(path: Path, method: str, url: str, body: bytes | None = None, *,
                 headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
    """Send one request on a new connection to the socket at ``path``; the response, not yet read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        head = [f"{method} {url} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body or b'')}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return Response(sock)
    except BaseException:
        sock.close()
        raise


def request_json(path: Path, method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
                 timeout: float | None = 30.0) -> tuple[int, Any]:
    """One request with a JSON body (or none); returns (status, decoded JSON or None)."""
    head = {"Accept": "application/json", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        head["Content-Type"] = "application/json"
    resp = open_request(path, method, url, data, headers=head, timeout=timeout)
    raw = resp.read()
    try:
        return resp.status, (json.loads(raw) if raw.strip() else None)
    except ValueError:
        return resp.status, None


def iter_sse(lines: Iterator[bytes]) -> Iterator[str]:
    """The ``data`` of each server-sent event in ``lines``, as the events arrive."""
    data: list[str] = []
    for raw in lines:
        text = raw.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
                data = []
        elif text.startswith("data:"):
            data.append(text[6:] if text[5:6] == " " else text[5:])
    if data:
        yield "\n".join(data)
