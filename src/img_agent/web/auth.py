"""Who may use the web side: a token, the Host and Origin checks, and the body-size limit.

:class:`WebGuard` is ASGI middleware in front of everything the HTTP listener serves:

- the ``Host`` header must be an allowed host (:func:`~img_agent.tools.http_guard.transport_security`:
  loopback names and the bound address with any port, plus ``Settings.http_allowed_hosts``), else 400,
  so a DNS-rebinding page cannot reach the server under a name of its own;
- ``GET /?token=T`` with the right token sets the ``img_agent_token`` cookie (HttpOnly,
  SameSite=Strict) and redirects to ``/``; every other request needs that cookie or
  ``Authorization: Bearer T`` (compared in constant time), except ``/static/*`` (holds no data);
- a state-changing request (POST, PUT, PATCH, DELETE) authenticated by the cookie needs an
  ``Origin`` (else ``Referer``) equal to the server's own origin, else 403: cross-site requests carry
  no cookie under SameSite=Strict, and this check also stops a same-site page on another port;
  bearer requests skip it (a browser never adds that header by itself);
- a body over ``max_body`` bytes gets 413, whether its length is declared or it comes in chunks (read
  whole, up to the limit, before the app sees it).

Refusals are JSON errors (:mod:`img_agent.web.errors`); the page ``/`` gets a short HTML page instead.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from img_agent.errors import AccessDeniedError
from img_agent.tools.http_guard import transport_security
from img_agent.web.errors import AuthenticationError, RequestTooLargeError, error_body, http_status

COOKIE = "img_agent_token"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PREFIXES = ("/static/",)
NEED_TOKEN_PAGE = (
    "<!doctype html><meta charset=utf-8><title>img-agent: token needed</title>"
    "<h1>img-agent</h1><p>{reason} Open the address that <code>img-agent web</code> printed "
    "(it carries a token), or run <code>img-agent web</code> again to see it.</p>"
)


def allowed_hosts(bound_host: str, extra_hosts: Sequence[str] = ()) -> list[str]:
    """Host header patterns (``name:*`` = any port) accepted by a server bound to ``bound_host``."""
    return list(transport_security(bound_host, extra_hosts).allowed_hosts or [])


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether a Host header value matches one of ``patterns`` (``name``, ``name:port``, ``name:*``)."""
    host = host.strip().lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.endswith(":*"):
            name = pattern[:-2]
            if host == name or (host.startswith(name + ":") and host[len(name) + 1:].isdigit()):
                return True
        elif host == pattern:
            return True
    return False


class WebGuard:
    """ASGI middleware: the checks of the module docstring, then ``app``."""

    def __init__(self, app: Any, *, token: str, hosts: Sequence[str], max_body: int) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = list(hosts)
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if not host_allowed(host, self.hosts):
            await _json(send, AccessDeniedError(
                f"Host {host!r} is not allowed here (a guard against DNS rebinding). Open the address "
                "'img-agent web' printed, or add the name to IMG_AGENT_HTTP_ALLOWED_HOSTS."), status=400)
            return
        if path.startswith(OPEN_PREFIXES) and method in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if path == "/" and method == "GET":
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if given is not None:
                await self._login(send, given[0], scope)
                return
        via = self._authenticated(headers)
        if via is None:
            if path == "/":
                await _html(send, 401, "This page needs the token.")
            else:
                await _json(send, AuthenticationError(
                    "Missing or wrong token: send 'Authorization: Bearer <token>' with the token 'img-agent web' "
                    "printed (it is in the URL after ?token=), or open that URL in the browser."),
                    extra={"www-authenticate": "Bearer"})
            return
        if via == "cookie" and method in STATE_CHANGING and not self._same_origin(headers, scope):
            await _json(send, AccessDeniedError(
                "Cross-origin request refused: a change made with the browser cookie must come from this page "
                "(its Origin header must be this server). API clients send 'Authorization: Bearer <token>'."))
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(send)
            return
        if not declared and "transfer-encoding" in headers:
            body = await self._read_body(receive)
            if body is None:
                await self._too_large(send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_body(self, receive: Any) -> bytes | None:
        """A body sent without a length, read whole up to the limit; None once it passes it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large_text(self) -> str:
        return (f"The request body is larger than {self.max_body // (1024 * 1024)} MiB, the limit of this server; "
                "send a smaller image (downscale it: CLIP looks at a few hundred pixels).")

    async def _too_large(self, send: Any) -> None:
        await _json(send, RequestTooLargeError(self._too_large_text()))

    def _token_ok(self, value: str) -> bool:
        return bool(value) and hmac.compare_digest(value.strip().encode(), self.token)

    def _authenticated(self, headers: dict[str, str]) -> str | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._token_ok(value):
            return "bearer"
        cookie = _cookie(headers.get("cookie", ""))
        if cookie is not None and self._token_ok(cookie):
            return "cookie"
        return None

    def _same_origin(self, headers: dict[str, str], scope: dict) -> bool:
        claimed = headers.get("origin") or headers.get("referer")
        if not claimed or claimed == "null":
            return False
        parts = urlsplit(claimed)
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        return f"{parts.scheme}://{parts.netloc}".lower() == own

    async def _login(self, send: Any, given: str, scope: dict) -> None:
        if not self._token_ok(given):
            await _html(send, 401, "The token in this address is wrong (the service was restarted?).")
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={given.strip()}; HttpOnly; SameSite=Strict; Path=/{secure}"
        await _send(send, 303, b"", [(b"location", b"/"), (b"set-cookie", cookie.encode()),
                                     (b"cache-control", b"no-store")])


def _replay(body: bytes, receive: Any) -> Any:
    """``receive`` that first gives ``body`` whole, then what the connection sends (a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _cookie(header: str) -> str | None:
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, exc: Exception, *, status: int | None = None, extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(exc)).encode()
    headers = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await _send(send, status or http_status(exc), body, headers)


async def _html(send: Any, status: int, reason: str) -> None:
    body = NEED_TOKEN_PAGE.format(reason=reason).encode()
    await _send(send, status, body, [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")])
