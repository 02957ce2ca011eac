"""``img-agent serve``: an MCP stdio server that relays every message to the store's service.

The bridge imports neither torch nor faiss nor the MCP SDK: it reads JSON-RPC messages from
stdin, posts each to the service's streamable-HTTP MCP endpoint (its own MCP session there), and
writes what comes back — the response, and the progress notifications and requests streamed before
it — to stdout. Requests run concurrently, so a cancellation or a second call passes while a long
call runs. It starts the service as soon as it starts, so the model loads while the client
initializes. If the service goes away (killed, crashed, outdated) or forgets the session (idle
expiry), the bridge starts a new one, opens a new session with the client's own ``initialize``
message, and retries the message once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from typing import Any, BinaryIO

from img_agent.errors import ImgAgentError
from img_agent.service.client import ServiceClient
from img_agent.service.transport import CONNECT_ERRORS, iter_sse, open_request

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
INTERNAL_ERROR = -32603


class _SessionLost(Exception):
    """The service does not know our session (restarted, or the session expired)."""


class Bridge:
    """Relays one stdio MCP client to the service of a store."""

    def __init__(self, client: ServiceClient, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.client = client
        self.stdin = stdin
        self.stdout = stdout
        self._out_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._session: str | None = None
        self._protocol: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._generation = 0  # counts sessions opened, so one lost session is renewed once
        self._closing = threading.Event()

    # -- output -------------------------------------------------------------------------------
    def _write(self, message: str | dict[str, Any]) -> None:
        text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
        data = text.replace("\n", " ").encode("utf-8") + b"\n"
        with self._out_lock:
            try:
                self.stdout.write(data)
                self.stdout.flush()
            except (BrokenPipeError, ValueError):
                self._closing.set()

    def _error(self, msg_id: Any, message: str) -> None:
        if msg_id is not None:
            self._write({"jsonrpc": "2.0", "id": msg_id, "error": {"code": INTERNAL_ERROR, "message": message}})

    # -- the service side --------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        head = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                **self.client.headers}
        if self._session:
            head[SESSION_HEADER] = self._session
        if self._protocol:
            head[VERSION_HEADER] = self._protocol
        return head

    def _post(self, message: dict[str, Any], *, relay: bool = True) -> dict[str, Any] | None:
        """POST one message; relay what streams back (unless ``relay`` is off) and return the response."""
        resp = open_request(self.client.paths.socket, "POST", MCP_PATH, json.dumps(message).encode(),
                            headers=self._headers())
        try:
            if resp.status == 404 and self._session:
                raise _SessionLost
            if message.get("method") == "initialize" and resp.status == 200:
                self._session = resp.header(SESSION_HEADER) or self._session
            if resp.status == 202:
                return None
            if resp.status >= 400:
                body = resp.read().decode("utf-8", "replace")
                with contextlib.suppress(ValueError):
                    parsed = json.loads(body)
                    if isinstance(parsed, dict) and "jsonrpc" in parsed:
                        if relay:
                            self._write(parsed)
                        return parsed
                raise ImgAgentError(f"the img-agent service answered HTTP {resp.status}: {body[:300]}")
            kind = (resp.header("content-type") or "").split(";")[0].strip()
            final = None
            events = iter_sse(resp.lines()) if kind == "text/event-stream" else [resp.read().decode("utf-8")]
            for data in events:
                if not data.strip():
                    continue
                parsed = json.loads(data)
                if isinstance(parsed, dict) and parsed.get("id") == message.get("id") and (
                        "result" in parsed or "error" in parsed):
                    final = parsed
                if relay:
                    self._write(data)
            return final
        finally:
            resp.close()

    def _renew(self, generation: int) -> None:
        """Open a new session (starting the service if needed) with the client's initialize message."""
        with self._session_lock:
            if generation != self._generation:
                return  # another thread renewed it meanwhile
            self._session = None
            self.client.ensure()
            if self._initialize is not None:
                init = dict(self._initialize, id=f"img-agent-bridge-renew-{generation}")
                response = self._post(init, relay=False)
                if response is not None and "result" in response:
                    self._protocol = str(response["result"].get("protocolVersion") or self._protocol or "")
                self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, relay=False)
                self._listen()
            self._generation += 1

    def _send(self, message: dict[str, Any]) -> None:
        """Relay one message; a lost service or session is renewed once and the message sent again."""
        msg_id = message.get("id") if "method" in message else None
        initialize = message.get("method") == "initialize"
        if initialize:
            self._initialize = message
        for attempt in (1, 2):
            generation = self._generation
            try:
                response = self._post(message)
            except (_SessionLost, *CONNECT_ERRORS) as exc:
                if attempt == 2:
                    self._error(msg_id, f"the img-agent service is unavailable ({type(exc).__name__}); "
                                        f"see {self.client.paths.log}")
                    return
                try:
                    self.client.ensure() if initialize else self._renew(generation)
                except (ImgAgentError, *CONNECT_ERRORS) as start_exc:
                    self._error(msg_id, f"the img-agent service could not be started: {start_exc}")
                    return
                continue
            except ImgAgentError as exc:
                self._error(msg_id, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - the client gets an error response, the bridge goes on
                log.exception("relaying %s failed", message.get("method"))
                self._error(msg_id, f"the bridge failed to relay this message ({type(exc).__name__}: {exc})")
                return
            if initialize and response is not None and "result" in response:
                self._protocol = str(response["result"].get("protocolVersion") or "")
                self._listen()
            return

    def _listen(self) -> None:
        """Hold the session's stream of server-initiated messages open (it also tells the service that this
        client is connected, which keeps it from stopping as idle), relaying what arrives on it."""
        session = self._session

        def listen() -> None:
            while not self._closing.is_set() and session == self._session:
                head = {k: v for k, v in self._headers().items() if k != "Content-Type"}
                head["Accept"] = "text/event-stream"
                try:
                    resp = open_request(self.client.paths.socket, "GET", MCP_PATH, headers=head)
                    if resp.status != 200:
                        resp.close()
                        return  # no such stream on this server, or the session is gone: calls will renew it
                    for data in iter_sse(resp.lines()):
                        if data.strip():
                            self._write(data)
                except (*CONNECT_ERRORS, OSError):
                    return

        threading.Thread(target=listen, name="img-agent-bridge-listen", daemon=True).start()

    # -- the client side ---------------------------------------------------------------------
    def run(self) -> int:
        """Relay until stdin closes; then end the session and return at once."""
        starter = threading.Thread(target=self._start_service, name="img-agent-bridge-start", daemon=True)
        starter.start()
        for line in iter(self.stdin.readline, b""):
            if self._closing.is_set():
                break
            text = line.strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except ValueError:
                self._write({"jsonrpc": "2.0", "id": None,
                             "error": {"code": -32700, "message": "Parse error: a line that is not JSON"}})
                continue
            if not isinstance(message, dict):
                self._write({"jsonrpc": "2.0", "id": None,
                             "error": {"code": -32600, "message": "Invalid request: batches are not supported"}})
                continue
            if message.get("method") == "initialize":
                starter.join()  # the session must start on a running service
            if message.get("method") == "initialize" or "id" not in message or "method" not in message:
                self._send(message)  # initialize, notifications and replies pass in order
                continue
            worker = threading.Thread(target=self._send, args=(message,), daemon=True,
                                      name=f"img-agent-bridge-{message.get('method', 'reply')}")
            worker.start()
        self._close()
        return 0

    def _start_service(self) -> None:
        try:
            self.client.ensure()
        except ImgAgentError as exc:
            log.error("%s", exc)

    def _close(self) -> None:
        """End our session on the service (in-flight calls there go on as jobs where they are jobs)."""
        if not self._session:
            return
        with contextlib.suppress(Exception):
            open_request(self.client.paths.socket, "DELETE", MCP_PATH, headers=self._headers(), timeout=2).read()


def run_bridge(client: ServiceClient) -> int:
    """Serve MCP on this process's stdin/stdout through the service of ``client``'s store."""
    return Bridge(client, sys.stdin.buffer, sys.stdout.buffer).run()
