"""A scripted OpenAI-compatible chat server for tests (real HTTP on 127.0.0.1, real ``openai`` client).

Each test queues replies; every POST to ``.../chat/completions`` consumes the next one, in
order, and is recorded (parsed JSON body) in :attr:`FakeLLMServer.requests`::

    server.reply("a dog on grass")                        # assistant text
    server.reply_tool_calls(("search_text", '{"query": "dog"}'))
    server.error(429, "slow down")                        # HTTP error with an OpenAI-style body
    server.slow(1.0, then="late")                          # answers after a delay (client times out)
    server.trickle("late", interval=1.0)                  # a valid answer, sent one byte per interval
    server.raw(200, "not json", "text/plain")             # malformed body
    server.refuse_images = True                           # 400 "image input not supported" for any
                                                          # request with image parts (queue untouched)

With nothing queued the server answers HTTP 500 ``"fake LLM: no reply scripted"`` (and retries
will consume nothing), so a test that makes an unexpected call fails visibly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IMAGE_REFUSAL_MESSAGE = "image input is not supported by this model"


@dataclass
class Reply:
    """One scripted HTTP reply."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    """When set: the whole response (status line, headers, body) goes out one byte per this many seconds."""


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    finish_reason: str | None = None,
    refusal: str | None = None,
    model: str = "fake-model",
) -> dict[str, Any]:
    """A ``chat.completion`` response body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if refusal is not None:
        message["refusal"] = refusal
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _error_body(status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


def request_images(body: dict[str, Any]) -> list[str]:
    """Image URLs in a recorded request body."""
    urls: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    urls.append(part["image_url"]["url"])
    return urls


def request_text(body: dict[str, Any]) -> str:
    """All text of a recorded request body's messages, joined by newlines."""
    texts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(texts)


class FakeLLMServer:
    """Threaded HTTP server answering Chat Completions requests from a queue of scripted replies."""

    def __init__(self) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.received_at: list[float] = []
        """``time.monotonic()`` when each request arrived."""
        self.refuse_images = False
        self.abandoned = 0
        """Trickled replies the client stopped reading (it closed the connection)."""
        self.completed_trickles = 0
        """Trickled replies sent to the end."""
        self._closed = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence http.server logging
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                reply = server._next(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.trickle:
                    self._trickle(reply)
                    return
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _trickle(self, reply: Reply) -> None:
                head = [f"HTTP/1.1 {reply.status} OK", f"Content-Type: {reply.content_type}",
                        f"Content-Length: {len(reply.body)}", *(f"{k}: {v}" for k, v in reply.headers.items())]
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + reply.body
                self.close_connection = True
                for i in range(len(data)):
                    if server._closed.is_set():
                        return
                    try:
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up: what a trickle test expects
                        server.abandoned += 1
                        return
                    server._closed.wait(reply.trickle)
                server.completed_trickles += 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()  # ends any trickle in progress
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """Base URL to give the client (``http://127.0.0.1:PORT/v1``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # ------------------------------------------------------------------ scripting

    def enqueue(self, reply: Reply) -> None:
        with self._lock:
            self._queue.append(reply)

    def reply(self, content: str, **kwargs: Any) -> None:
        """Queue an assistant text answer."""
        self.enqueue(Reply(body=json.dumps(completion(content, **kwargs)).encode()))

    def reply_tool_calls(self, *calls: tuple[str, str], content: str | None = None, ids: bool = True) -> None:
        """Queue an assistant message calling tools: each call is ``(name, arguments_json)``."""
        tool_calls = [
            {
                "id": f"call_{len(self.requests)}_{i}" if ids else "",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(calls)
        ]
        self.enqueue(Reply(body=json.dumps(completion(content, tool_calls)).encode()))

    def reply_json(self, body: dict[str, Any], status: int = 200) -> None:
        """Queue an arbitrary JSON body."""
        self.enqueue(Reply(status=status, body=json.dumps(body).encode()))

    def error(self, status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> None:
        """Queue an HTTP error with an OpenAI-style error body."""
        self.enqueue(Reply(status=status, body=_error_body(status, message), headers=headers or {}))

    def slow(self, delay: float, then: str = "too late") -> None:
        """Queue a text answer sent only after ``delay`` seconds."""
        self.enqueue(Reply(body=json.dumps(completion(then)).encode(), delay=delay))

    def trickle(self, then: str = "too late", interval: float = 1.0) -> None:
        """Queue a valid text answer whose bytes (headers included) go out one per ``interval`` seconds."""
        self.enqueue(Reply(body=json.dumps(completion(then)).encode(), trickle=interval))

    def raw(self, status: int, body: str, content_type: str = "text/plain") -> None:
        """Queue a raw body (malformed responses)."""
        self.enqueue(Reply(status=status, body=body.encode(), content_type=content_type))

    @property
    def pending(self) -> int:
        """Replies still queued."""
        with self._lock:
            return len(self._queue)

    def _next(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.received_at.append(time.monotonic())
            self.paths.append(path)
            self.headers.append(headers)
            if not path.rstrip("/").endswith("/chat/completions"):
                return Reply(status=404, body=_error_body(404, f"no route {path}"))
            if self.refuse_images and request_images(body):
                return Reply(status=400, body=_error_body(400, IMAGE_REFUSAL_MESSAGE))
            if not self._queue:
                return Reply(status=500, body=_error_body(500, "fake LLM: no reply scripted"))
            return self._queue.popleft()
