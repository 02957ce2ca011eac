"""What an HTTP request must pass before the MCP endpoint sees it: a bearer token, and a body-size limit.

:class:`HttpGuard` is ASGI middleware in front of the SDK's streamable-HTTP app:

- with a token, a request without ``Authorization: Bearer <token>`` gets 401 (compared in constant
  time); the SDK's Host/Origin allow-list (:func:`transport_security`) still applies after it;
- a body larger than :data:`MAX_HTTP_BODY_BYTES` (room for a 16 MiB image as base64 in JSON) gets 413
  with a JSON-RPC error whose message states the limit and what to do, instead of a bare status.

Errors are JSON-RPC error objects (``id`` null), so an MCP client can show their message.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from img_agent.tools.sandbox import MAX_INLINE_IMAGE_BYTES, MAX_INLINE_IMAGE_CHARS

MAX_HTTP_BODY_BYTES = MAX_INLINE_IMAGE_CHARS + 1024 * 1024
"""Largest HTTP request body: a tool call carrying the largest inline image as base64, plus its JSON."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
AUTH_FAILED = -32001
"""JSON-RPC error code of a refused token (server-defined range)."""
TOO_LARGE = -32600


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (only this machine can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def transport_security(host: str, extra_hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """The Host/Origin allow-list for a server bound to ``host``: loopback names, the bound address and
    this machine's name (any port), plus ``extra_hosts`` (``name``, ``name:port`` or ``name:*``)."""
    names = list(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::", ""):
        names.append(f"[{host}]" if ":" in host else host)
    else:
        names.extend({socket.gethostname(), socket.getfqdn()} - {""})
    hosts = [f"{name}:*" for name in dict.fromkeys(names)]
    for extra in extra_hosts:
        hosts.append(extra)
        if ":" not in extra.rsplit("]", 1)[-1]:
            hosts.append(f"{extra}:*")
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


class HttpGuard:
    """ASGI middleware: token check and body-size limit with JSON-RPC error messages (see the module)."""

    def __init__(self, app: Any, *, token: str | None = None, max_body: int = MAX_HTTP_BODY_BYTES) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            await _error(send, 401, AUTH_FAILED, "Missing or wrong bearer token: send the header 'Authorization: "
                         "Bearer <token>' with the token the server printed at start (or set with --token / "
                         "IMG_AGENT_HTTP_TOKEN).", {"www-authenticate": "Bearer"})
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(send)
            return
        messages: list[dict] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), str(self.token).encode())

    async def _too_large(self, send: Any) -> None:
        await _error(send, 413, TOO_LARGE, f"The request body is larger than {_mib(self.max_body)}, the limit of "
                     f"this server (room for one image of up to {_mib(MAX_INLINE_IMAGE_BYTES)} as base64). Send a "
                     "smaller image (downscale it: CLIP looks at a few hundred pixels) or pass its file path.")


async def _error(send: Any, status: int, code: int, message: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
