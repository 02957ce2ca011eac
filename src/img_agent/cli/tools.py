"""The tool-surface commands: ``serve`` (the MCP server) and ``tools`` (the tool schemas as JSON).

``img-agent serve`` is an MCP stdio server relaying to the store's service (the service keeps the model
warm for every client), or with ``--http`` a standalone streamable-HTTP server on 127.0.0.1;
``img-agent tools --format openai|responses|mcp`` prints the tool schemas.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img_agent.cli import output
from img_agent.cli.context import llm_settings
from img_agent.locations import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT
from img_agent.errors import ConfigError

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext

FORMATS = ("openai", "responses", "mcp")


COMMANDS = ('serve', 'tools')
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` and ``tools`` (``common``: the parser of the global options)."""
    serve = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the MCP server (stdio; --http for streamable HTTP)",
        description="Serve the image tools over MCP. stdio by default (for Claude Desktop, Cursor, ...); "
        "--http serves streamable HTTP at http://HOST:PORT/mcp. Tools may only read files under the "
        "allowed folders: the --root folders, or else IMG_AGENT_IMAGE_ROOTS plus every folder indexed before. "
        "LLM features use the LLM_* environment variables.",
    )
    serve.add_argument(
        "--root", dest="roots", metavar="DIR", action="append", type=Path, default=None,
        help="a folder the tools may read images from (repeatable); replaces the default folders",
    )
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default=DEFAULT_HTTP_HOST, help=f"HTTP address to bind (default {DEFAULT_HTTP_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT, help=f"HTTP port (default {DEFAULT_HTTP_PORT})")
    serve.add_argument("--token", default=None, help="bearer token HTTP clients must send (default: IMG_AGENT_HTTP_TOKEN; "
                       "on a non-loopback --host a random one is made and printed)")
    serve.set_defaults(func=cmd_serve)

    tools = subparsers.add_parser(
        "tools",
        parents=[common],
        help="print the tool schemas (OpenAI Chat Completions, Responses API, or MCP) as JSON",
    )
    tools.add_argument(
        "--format", choices=FORMATS, default="openai",
        help="openai = Chat Completions tools, responses = Responses API tools, mcp = MCP tools/list entries",
    )
    tools.set_defaults(func=cmd_tools)


def cmd_serve(ctx: CLIContext) -> int:
    """MCP over stdio, relayed to the store's service (started at once, so the model loads while the client
    initializes); with ``--http``, a standalone streamable-HTTP server that opens the store itself."""
    args = ctx.args
    roots = None
    if args.roots:
        roots = [root.expanduser().resolve() for root in args.roots]
        missing = [str(root) for root in roots if not root.is_dir()]
        if missing:
            raise ConfigError(f"--root must name existing folders; not found: {', '.join(missing)}.")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}.")
    if not args.http:
        from img_agent.service.bridge import run_bridge

        return run_bridge(ctx.service(client="bridge", roots=[str(r) for r in roots] if roots else None))
    from img_agent.tools.mcp_standalone import http_token, serve

    given = args.token or ctx.settings().http_token
    token = http_token(args.host, given)
    if token and not given:
        print(f"Clients of http://{args.host}:{args.port}/mcp must send 'Authorization: Bearer {token}'", flush=True)
    serve(ctx.settings(), roots=roots, llm_settings=llm_settings(args), http=True, host=args.host, port=args.port,
          token=token)
    return 0


def schemas(fmt: str, *, llm_configured: bool = False) -> list[dict[str, Any]]:
    """The tool schemas in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "openai":
        from img_agent.tools.openai_tools import chat_completions_tools

        return chat_completions_tools()
    if fmt == "responses":
        from img_agent.tools.openai_tools import responses_tools

        return responses_tools()
    if fmt == "mcp":
        from img_agent.tools.mcp_server import mcp_tool_list

        return mcp_tool_list(llm_configured=llm_configured)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def cmd_tools(ctx: CLIContext) -> int:
    """Print the schemas as JSON on stdout."""
    output.print_json(schemas(ctx.args.format, llm_configured=llm_settings(ctx.args).enabled))
    return 0
