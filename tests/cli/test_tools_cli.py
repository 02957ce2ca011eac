"""The ``serve`` and ``tools`` commands as registered on a parser (the main CLI does the same)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from img_agent.errors import ConfigError
from img_agent.tools import chat_completions_tools, responses_tools
from img_agent.cli.tools import register
from img_agent.config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT
from img_agent.tools.mcp_server import mcp_tool_list


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="img-agent")
    register(parser.add_subparsers(dest="command", required=True), argparse.ArgumentParser(add_help=False))
    return parser


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("openai", chat_completions_tools), ("responses", responses_tools), ("mcp", mcp_tool_list)],
)
def test_tools_prints_the_schemas(parser, capsys, fmt: str, expected) -> None:
    args = parser.parse_args(["tools", "--format", fmt])
    assert args.func(SimpleNamespace(args=args)) == 0
    assert json.loads(capsys.readouterr().out) == expected()


def test_serve_options(parser, tmp_path: Path) -> None:
    args = parser.parse_args(["serve"])
    assert (args.roots, args.http, args.host, args.port) == (None, False, DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)
    args = parser.parse_args(["serve", "--root", str(tmp_path), "--root", "~", "--http", "--port", "9000"])
    assert args.roots == [tmp_path, Path("~")] and args.http and args.port == 9000


@pytest.mark.parametrize("argv", [["serve", "--root", "/no/such/folder"], ["serve", "--port", "0"]])
def test_serve_refuses_bad_options_before_starting(parser, argv: list[str]) -> None:
    args = parser.parse_args(argv)
    with pytest.raises(ConfigError):
        args.func(SimpleNamespace(args=args, settings=lambda: pytest.fail("must not get this far")))
