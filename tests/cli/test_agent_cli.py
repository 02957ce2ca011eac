"""The ``ask`` / ``chat`` commands and the ``search --expand`` helper, driven through argparse."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from img_agent.cli import agent as agent_cli
from img_agent.cli.context import CLIContext, llm_settings
from img_agent.config import Settings
from img_agent.errors import ConfigError, LLMNotConfiguredError
from img_agent.results import SearchFilter
from img_agent.testing.fake_engine import FakeEngine
from img_agent.testing.fake_tools import TOOLS, Dispatcher


class FakeContext(CLIContext):
    """The main CLI's context over a given engine, with ``topk`` 4."""

    def __init__(self, args: argparse.Namespace, engine: Any) -> None:
        super().__init__(args)
        self._engine = engine
        self.no_service = True  # the given engine, in this process

    def settings(self) -> Settings:
        return Settings(topk=4)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    main = argparse.ArgumentParser(prog="img-agent", parents=[common])
    sub = main.add_subparsers(dest="command", required=True)
    agent_cli.register(sub, common)
    search = sub.add_parser("search", parents=[common])
    search.add_argument("text")
    search.add_argument("--expand", action="store_true")  # the main CLI defines it itself
    agent_cli.add_rag_arguments(search)
    return main


def run(argv: list[str], engine: Any) -> int:
    args = parser().parse_args(argv)
    return args.func(FakeContext(args, engine))


def test_ask_human_output(fake_llm, capsys):
    fake_llm.reply('["red car"]')
    fake_llm.reply("The car is red [1].")
    code = run(["ask", "what colour is the car?", "-k", "2", "--llm-base-url", fake_llm.url], FakeEngine())
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("The car is red [1].\n")
    assert "sources:" in out
    assert "[1] 0.290  #1  /photos/img_001.jpg  (cited)" in out
    assert "[2] 0.280  #2  /photos/img_002.jpg\n" in out


def test_ask_json(fake_llm, capsys):
    fake_llm.reply("Red [2].")
    code = run(["ask", "car colour?", "--no-expand", "--json", "--llm-base-url", fake_llm.url], FakeEngine())
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["answer"] == "Red [2]."
    assert data["cited_ids"] == [2]
    assert len(data["sources"]) == 5


def test_ask_without_llm_lists_images(capsys):
    assert run(["ask", "where is the dog?", "-k", "2", "--folder", "/photos"], FakeEngine()) == 0
    out = capsys.readouterr().out
    assert "sources:" in out and "/photos/img_002.jpg" in out
    assert "note: No LLM configured" in out


def test_search_expand(fake_llm, capsys):
    fake_llm.reply('["dog on grass", "puppy"]')
    fake_llm.reply("All three queries found image 1.")
    args = parser().parse_args(["search", "dog", "--expand", "--variants", "2", "--llm-base-url", fake_llm.url])
    code = agent_cli.run_rag_search(FakeContext(args, FakeEngine()), args.text, None, SearchFilter())
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "searched: dog | dog on grass | puppy"
    assert "1. 0.290  #1  /photos/img_001.jpg  (3/3 queries)" in out
    assert "All three queries found image 1." in out
    assert len(out.splitlines()) == 1 + 4 + 2  # k defaults to the settings' topk (4)


def test_search_expand_json_without_llm(capsys):
    args = parser().parse_args(["search", "dog", "--expand", "--json", "--fusion", "max"])
    agent_cli.run_rag_search(FakeContext(args, FakeEngine()), "dog", 3)
    data = json.loads(capsys.readouterr().out)
    assert data["expanded_queries"] == ["dog"]
    assert data["total_results"] == 3
    assert data["fusion"] == "max"
    assert data["llm_used"] is False


@pytest.fixture
def chat_tools(monkeypatch) -> Dispatcher:
    dispatcher = Dispatcher()
    monkeypatch.setattr(agent_cli, "build_tools", lambda ctx: (TOOLS, dispatcher))
    return dispatcher


def test_chat_from_a_pipe(fake_llm, chat_tools, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("find a dog\n\n/reset\nhello\n/exit\nnever sent\n"))
    fake_llm.reply_tool_calls(("search_text", '{"query": "dog", "k": 3}'))
    fake_llm.reply("Found /photos/dog.jpg.")
    fake_llm.reply("Hello!")
    code = run(["chat", "--trace", "--llm-base-url", fake_llm.url], FakeEngine())
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == "Found /photos/dog.jpg.\nHello!\n"
    assert '[tool 1] search_text({"query": "dog", "k": 3}) -> ok' in captured.err
    assert "(conversation reset)" in captured.err
    assert "you>" not in captured.err  # no prompt when stdin is not a terminal
    assert len(fake_llm.requests) == 3
    assert [m["role"] for m in fake_llm.requests[2]["messages"]] == ["system", "user"]  # reset worked
    assert chat_tools.calls == [("search_text", '{"query": "dog", "k": 3}')]


def test_chat_json_lines(fake_llm, chat_tools, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("status?\nagain\n"))
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("12 images.")
    fake_llm.error(500)
    fake_llm.error(500)
    assert run(["chat", "--json", "--llm-base-url", fake_llm.url], FakeEngine()) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert turns[0]["answer"] == "12 images."
    assert turns[0]["tool_calls"][0]["name"] == "index_status"
    assert turns[1]["stop_reason"] == "llm_error"
    assert "HTTP 500" in turns[1]["notes"][0]


def test_chat_needs_an_llm(chat_tools, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    with pytest.raises(LLMNotConfiguredError, match="chat needs an LLM"):
        run(["chat"], FakeEngine())


def test_llm_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("LLM_MODEL", "env-model")
    monkeypatch.setenv("LLM_BASE_URL", "http://example.invalid/v1")
    args = parser().parse_args(["ask", "q", "--llm-model", "flag-model", "--llm-timeout", "3"])
    settings = llm_settings(args)
    assert (settings.model, settings.base_url, settings.timeout) == ("flag-model", "http://example.invalid/v1", 3.0)


def test_invalid_llm_flag_is_a_config_error():
    args = parser().parse_args(["ask", "q", "--llm-timeout", "-1"])
    with pytest.raises(ConfigError, match="timeout"):
        llm_settings(args)


def test_default_tools_come_from_the_tools_layer():
    from img_agent.tools.openai_tools import chat_completions_tools

    class Engine:
        settings = Settings(model="tiny-test")

        def indexed_roots(self) -> list[str]:
            return []

    schemas, dispatch = agent_cli.build_tools(FakeContext(parser().parse_args(["chat"]), Engine()))
    assert schemas == chat_completions_tools()
    assert "error" in json.loads(dispatch("no_such_tool", "{}"))
