"""``img-agent web``: turn on the HTTP side of the store's service and print its address (token included)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from img_agent.service.web_listener import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

COMMANDS = ("web",)
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "web", parents=[common], help="serve the gallery and the REST API in the browser (prints the URL)",
        description="Turns on the HTTP listener of the store's service (started if needed) and prints its address, "
        "which carries a random token: the browser swaps it for a cookie, API clients send 'Authorization: Bearer "
        "TOKEN'. The REST API is under /api (docs at /api/docs), MCP over HTTP at /mcp. The listener stays on "
        "until 'img-agent service stop'.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any free one)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}, this machine only; 0.0.0.0 = every network, "
                   "still guarded by the token)")
    p.add_argument("--open", action="store_true", help="open the address in the web browser")
    p.set_defaults(func=cmd_web)


def cmd_web(ctx: CLIContext) -> int:
    from img_agent.errors import ConfigError

    args = ctx.args
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port; give 1-65535 (or 0 for any free port).")
    info = ctx.client().request("POST", "/api/service/web", {"host": args.host, "port": args.port})
    if not info.get("loopback", True):
        print(f"warning: the web listener on {info['host']} is reachable from other machines; anyone with the "
              "token in the address below can search and change this store. Share it with care.", file=sys.stderr)
    if info.get("port") != args.port and args.port:
        print(f"note: the web listener was already on, at port {info['port']}.", file=sys.stderr)
    ctx.emit(info, lambda: print(f"img-agent web: {info['url']}\n(stops with 'img-agent service stop')"))
    if args.open:
        import webbrowser

        webbrowser.open(info["url"])
    return 0
