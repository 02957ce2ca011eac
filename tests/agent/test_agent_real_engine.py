"""The agent layer over the real engine (tiny random-weight CLIP, generated images) and real tools layer."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import pytest
from PIL import Image

from img_agent.agent.chat import ChatSession
from img_agent.agent.qa import answer_question
from img_agent.agent.rag import rag_search
from img_agent.index import engine as engine_module
from img_agent.testing.fake_llm import request_images
from img_agent.tools import openai_tools
from img_agent.tools.image_tools import ImageTools


@pytest.fixture
def engine(settings, image_dir) -> Iterator[object]:
    eng = engine_module.Engine.open(settings)
    report = eng.add_paths([image_dir])
    assert len(report.added) == 12
    try:
        yield eng
    finally:
        eng.close()


def test_plain_rag_equals_engine_search(engine):
    result = rag_search(engine, None, "a red square", k=5)
    direct = engine.search_text("a red square", k=5)
    assert [(h.id, h.score) for h in result.results] == [(h.id, h.score) for h in direct]
    assert result.llm_used is False


def test_rag_with_expansion_and_thumbnails(engine, llm, fake_llm):
    fake_llm.reply('{"queries": ["a red square on white", "a crimson block"]}')
    fake_llm.reply("The top images are mostly red.")
    result = rag_search(engine, llm, "a red square", k=6, max_images=2)
    assert result.expanded_queries == ["a red square", "a red square on white", "a crimson block"]
    assert result.total_results == 6
    assert len({h.id for h in result.results}) == 6
    assert all(h.matched_queries for h in result.results)
    assert all(-1.0 <= h.score <= 1.0 for h in result.results)
    # per-query depth 12 covers the whole collection: every image is in every list
    assert all(len(h.matched_queries) == 3 for h in result.results)
    assert result.images_sent == 2
    urls = request_images(fake_llm.requests[1])
    assert len(urls) == 2
    thumb = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256


def test_answer_question_without_image_support(engine, llm, fake_llm):
    fake_llm.refuse_images = True
    fake_llm.reply("Image [1] is a PNG file.")
    result = answer_question(engine, llm, "which image is a png?", k=3, expand=False)
    assert result.answer == "Image [1] is a PNG file."
    assert result.cited_ids == [result.sources[0].id]
    assert result.images_sent == 0
    assert [len(request_images(r)) for r in fake_llm.requests] == [3, 0]


def test_chat_through_the_real_tools_layer_recovers_from_a_tool_error(engine, llm, fake_llm):
    from img_agent.tools.openai_tools import chat_completions_tools, dispatch as dispatch_call

    tools_ = ImageTools(engine, llm=llm)
    tools, dispatch = chat_completions_tools(), lambda name, arguments: dispatch_call(tools_, name, arguments)
    session = ChatSession(llm, tools, dispatch)
    fake_llm.reply_tool_calls(("search_by_text", '{"query": "red", "k": 0}'))  # k out of range
    fake_llm.reply_tool_calls(("search_by_text", '{"query": "red", "k": 2}'))
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("Two red candidates; 12 images indexed.")
    turn = session.send("find red images and tell me the index size")
    assert turn.answer == "Two red candidates; 12 images indexed."
    assert [(c.name, c.error) for c in turn.tool_calls] == [
        ("search_by_text", True),
        ("search_by_text", False),
        ("index_status", False),
    ]
    assert "k" in json.loads(turn.tool_calls[0].result)["error"]
    assert json.loads(turn.tool_calls[2].result)["live"] == 12
    assert {t["function"]["name"] for t in fake_llm.requests[0]["tools"]} >= {"search_by_text", "index_status"}


def test_ask_about_images_tool_uses_this_layer(engine, llm, fake_llm):
    fake_llm.reply('["a red square"]')
    fake_llm.reply("It is red [1].")
    result = json.loads(
        openai_tools.dispatch(ImageTools(engine, llm=llm), "ask_about_images", '{"question": "what colour?", "k": 2}')
    )
    assert "error" not in result, result
    assert result["answer"] == "It is red [1]."
    assert result["llm_used"] is True


@pytest.fixture
def indexed(settings, image_dir):
    """A data directory with the 12 images indexed, closed again (for the CLI to open)."""
    with engine_module.Engine.open(settings) as eng:
        eng.add_paths([image_dir])
    return settings


@pytest.fixture
def main_cli():
    """The main command line."""
    from img_agent.cli import main as cli_main

    return cli_main


def test_main_cli_ask(indexed, main_cli, fake_llm, capsys):
    fake_llm.reply("A PNG [2].")
    code = main_cli.main(
        ["ask", "which one is a png?", "--no-expand", "-k", "3", "--llm-base-url", fake_llm.url, "--llm-vision", "no",
         "--data-dir", str(indexed.data_dir), "--model", "tiny-test", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["answer"] == "A PNG [2]." and data["cited_ids"] == [data["sources"][1]["id"]]


def test_main_cli_search_expand(indexed, main_cli, fake_llm, monkeypatch, capsys):
    monkeypatch.setenv("LLM_BASE_URL", fake_llm.url)
    fake_llm.reply('["a red square"]')
    fake_llm.reply("Reds first.")
    code = main_cli.main(
        ["search", "红色方块", "--expand", "-k", "3", "--data-dir", str(indexed.data_dir), "--model", "tiny-test"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "searched: 红色方块 | a red square"
    assert "Reds first." in out


def test_main_cli_chat_from_a_pipe(indexed, main_cli, fake_llm, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("how many images?\n"))
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("There are 12 images.")
    code = main_cli.main(
        ["chat", "--llm-base-url", fake_llm.url, "--data-dir", str(indexed.data_dir), "--model", "tiny-test"]
    )
    assert code == 0
    assert capsys.readouterr().out == "There are 12 images.\n"
    assert '"live":12' in fake_llm.requests[1]["messages"][-1]["content"].replace(" ", "")


def test_main_cli_chat_without_llm_fails_cleanly(indexed, main_cli, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    code = main_cli.main(["chat", "--data-dir", str(indexed.data_dir), "--model", "tiny-test"])
    assert code != 0
    assert "chat needs an LLM" in capsys.readouterr().err
