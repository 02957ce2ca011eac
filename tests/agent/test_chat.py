"""Multi-turn chat with tool calls through an injected dispatcher; errors go back to the model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from img_agent.agent.chat import ChatSession
from img_agent.errors import LLMNotConfiguredError, NotFoundError
from img_agent.testing.fake_llm import request_text
from img_agent.testing.fake_tools import TOOLS, Dispatcher


@pytest.fixture
def dispatcher() -> Dispatcher:
    return Dispatcher()


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def test_multi_turn_with_tool_calls(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply_tool_calls(("search_text", '{"query": "dog", "k": 3}'))
    fake_llm.reply("I found /photos/dog.jpg (score 0.31).")
    turn = session.send("find me a dog")
    assert turn.answer == "I found /photos/dog.jpg (score 0.31)."
    assert turn.stop_reason == "answer"
    assert turn.rounds == 1
    assert [(c.name, c.error) for c in turn.tool_calls] == [("search_text", False)]
    assert dispatcher.calls == [("search_text", '{"query": "dog", "k": 3}')]

    first = fake_llm.requests[0]
    assert first["tools"] == TOOLS
    assert first["messages"][0]["role"] == "system"
    assert "search_text, index_status" in first["messages"][0]["content"]
    second = fake_llm.requests[1]
    assert second["messages"][2]["tool_calls"][0]["function"]["name"] == "search_text"
    assert tool_messages(second)[0]["tool_call_id"] == second["messages"][2]["tool_calls"][0]["id"]
    assert "/photos/dog.jpg" in tool_messages(second)[0]["content"]

    # second turn: the model sees the whole conversation so far
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("There are 12 images.")
    turn = session.send("how many images are there?")
    assert turn.answer == "There are 12 images."
    third = fake_llm.requests[2]
    assert [m["role"] for m in third["messages"]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert third["messages"][4]["content"] == "I found /photos/dog.jpg (score 0.31)."


def test_tool_error_is_shown_to_the_model_which_recovers(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply_tool_calls(("search_text", '{"query": "", "k": null}'))
    fake_llm.reply_tool_calls(("search_text", '{"query": "cat", "k": null}'))
    fake_llm.reply("Here is a cat picture.")
    turn = session.send("cats?")
    assert turn.answer == "Here is a cat picture."
    assert [(c.round, c.error) for c in turn.tool_calls] == [(1, True), (2, False)]
    error_result = tool_messages(fake_llm.requests[1])[0]["content"]
    assert "query must not be empty" in error_result


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("delete_everything", "{}", "Unknown tool 'delete_everything'. Available tools: index_status, search_text."),
        ("search_text", '{"query": "dog",', "not valid JSON"),
        ("search_text", '["dog"]', "must be a JSON object"),
    ],
)
def test_bad_calls_never_reach_the_dispatcher(llm, fake_llm, dispatcher, name, arguments, message):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply_tool_calls((name, arguments))
    fake_llm.reply("Sorry, let me answer without that.")
    turn = session.send("do something")
    assert turn.stop_reason == "answer"
    assert turn.tool_calls[0].error is True
    assert message in json.loads(turn.tool_calls[0].result)["error"]
    assert message in tool_messages(fake_llm.requests[1])[0]["content"]
    assert dispatcher.calls == []


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (NotFoundError("Image 7 is not in the catalog."), "Image 7 is not in the catalog."),
        (RuntimeError("disk on fire"), "Tool search_text failed unexpectedly: RuntimeError: disk on fire"),
    ],
)
def test_dispatcher_exceptions_become_error_results(llm, fake_llm, dispatcher, exc, message):
    session = ChatSession(llm, TOOLS, dispatcher)
    dispatcher.raise_next = exc
    fake_llm.reply_tool_calls(("search_text", '{"query": "x", "k": 1}'))
    fake_llm.reply("That failed.")
    turn = session.send("search x")
    assert json.loads(turn.tool_calls[0].result) == {"error": message}
    assert turn.answer == "That failed."


def test_several_calls_in_one_round_and_missing_ids(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply_tool_calls(("index_status", "{}"), ("search_text", '{"query": "dog", "k": 2}'), ids=False)
    fake_llm.reply("done")
    turn = session.send("status and dogs")
    assert [c.id for c in turn.tool_calls] == ["call_1_0", "call_1_1"]
    assert [m["tool_call_id"] for m in tool_messages(fake_llm.requests[1])] == ["call_1_0", "call_1_1"]


def test_round_limit_then_final_answer_without_tools(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher, max_rounds=2)
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("Giving up on tools: there are 12 images.")
    turn = session.send("loop forever")
    assert turn.stop_reason == "round_limit"
    assert turn.rounds == 2
    assert len(turn.tool_calls) == 2
    assert turn.answer == "Giving up on tools: there are 12 images."
    assert "limit" in turn.notes[0]
    final = fake_llm.requests[2]
    assert final["tool_choice"] == "none"
    assert "tool-call limit (2 rounds)" in request_text(final)


def test_default_round_limit_is_ten(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    for _ in range(10):
        fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply("stopped")
    turn = session.send("go")
    assert turn.rounds == 10 and turn.stop_reason == "round_limit"
    assert len(dispatcher.calls) == 10


def test_llm_failure_mid_turn_keeps_the_session_usable(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.error(500)
    fake_llm.error(500)
    turn = session.send("status?")
    assert turn.stop_reason == "llm_error"
    assert turn.answer == ""
    assert len(turn.tool_calls) == 1
    assert "HTTP 500" in turn.notes[0]
    fake_llm.reply("Back again.")
    assert session.send("hello?").answer == "Back again."
    roles = [m["role"] for m in fake_llm.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]


def test_reset_forgets_the_conversation(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher)
    fake_llm.reply("hi")
    session.send("hello")
    session.reset()
    fake_llm.reply("hi again")
    session.send("hello again")
    assert [m["role"] for m in fake_llm.requests[-1]["messages"]] == ["system", "user"]


def test_chat_without_llm_is_refused(dispatcher):
    with pytest.raises(LLMNotConfiguredError, match="LLM_BASE_URL"):
        ChatSession(None, TOOLS, dispatcher)


def test_tool_calls_after_the_limit_are_not_run(llm, fake_llm, dispatcher):
    session = ChatSession(llm, TOOLS, dispatcher, max_rounds=1)
    fake_llm.reply_tool_calls(("index_status", "{}"))
    fake_llm.reply_tool_calls(("index_status", "{}"), content="One more look...")
    turn = session.send("go")
    assert turn.stop_reason == "round_limit"
    assert turn.answer == "One more look..."
    assert len(dispatcher.calls) == 1
    assert "not run" in turn.notes[1]
