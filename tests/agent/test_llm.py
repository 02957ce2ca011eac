"""LLMClient against the scripted server: requests, retries, failures, image fallback, JSON extraction."""

from __future__ import annotations

import socket
import time

import pytest

from img_agent.agent import llm as llm_module
from img_agent.agent.jsontext import extract_json
from img_agent.agent.llm import LLMClient, user_message
from img_agent.config import LLMSettings
from img_agent.errors import LLMError
from img_agent.testing.fake_llm import IMAGE_REFUSAL_MESSAGE, request_images, request_text


HELLO = [{"role": "user", "content": "hello"}]


def test_no_llm_configured_gives_none():
    assert LLMClient.from_settings(None) is None
    assert LLMClient.from_settings(LLMSettings()) is None


def test_base_url_only_is_enough(fake_llm):
    client = LLMClient.from_settings(LLMSettings(base_url=fake_llm.url))
    assert client is not None
    fake_llm.reply("hi")
    assert client.complete_text(HELLO) == "hi"
    assert fake_llm.headers[0]["authorization"] == f"Bearer {llm_module.NO_KEY_PLACEHOLDER}"


def test_complete_text_sends_model_and_messages(llm, fake_llm):
    fake_llm.reply("  hello back \n")
    assert llm.complete_text(HELLO) == "hello back"
    assert fake_llm.paths == ["/v1/chat/completions"]
    assert fake_llm.requests[0]["model"] == "fake-model"
    assert fake_llm.requests[0]["messages"] == HELLO
    assert "tools" not in fake_llm.requests[0]
    assert fake_llm.headers[0]["authorization"] == "Bearer test-key"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retries_transient_errors_then_succeeds(llm, fake_llm, status):
    fake_llm.error(status, "try later")
    fake_llm.reply("ok")
    assert llm.complete_text(HELLO) == "ok"
    assert len(fake_llm.requests) == 2


def test_retries_are_bounded(make_llm, fake_llm):
    client = make_llm(max_retries=2)
    for _ in range(3):
        fake_llm.error(500, "boom")
    fake_llm.reply("never reached")
    with pytest.raises(LLMError, match=r"HTTP 500 \(3 attempts\)"):
        client.complete_text(HELLO)
    assert len(fake_llm.requests) == 3
    assert fake_llm.pending == 1


def test_rate_limit_message(llm, fake_llm):
    fake_llm.error(429, "slow down")
    fake_llm.error(429, "slow down")
    with pytest.raises(LLMError, match="rate limiting"):
        llm.complete_text(HELLO)


def test_retry_after_is_capped():
    assert llm_module.backoff_seconds(0, 3600.0) == llm_module.MAX_RETRY_WAIT
    assert llm_module.backoff_seconds(5, None) <= llm_module.MAX_RETRY_WAIT


def test_retry_after_header_honoured_but_capped(llm, fake_llm):
    fake_llm.error(429, "wait", headers={"Retry-After": "120"})
    fake_llm.reply("ok")
    started = time.monotonic()
    assert llm.complete_text(HELLO) == "ok"
    assert time.monotonic() - started < 1.0


def test_timeout_is_bounded(make_llm, fake_llm):
    client = make_llm(timeout=0.5, max_retries=1)
    fake_llm.slow(1.5)
    fake_llm.slow(1.5)
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"did not answer within 0.5 s \(2 attempts\)"):
        client.complete_text(HELLO)
    elapsed = time.monotonic() - started
    assert elapsed < client.max_call_seconds + 1.5  # slack for a loaded machine
    assert len(fake_llm.requests) == 2


@pytest.mark.parametrize(("status", "hint"), [(401, "LLM_API_KEY"), (404, "LLM_BASE_URL"), (400, "LLM_MODEL")])
def test_client_errors_are_not_retried(llm, fake_llm, status, hint):
    fake_llm.error(status, "nope")
    with pytest.raises(LLMError, match=hint):
        llm.complete_text(HELLO)
    assert len(fake_llm.requests) == 1


def test_unreachable_server(make_llm):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_llm(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, timeout=0.5)
    with pytest.raises(LLMError, match="Cannot reach the LLM"):
        client.complete_text(HELLO)


@pytest.mark.parametrize(
    ("script", "match"),
    [
        (lambda s: s.raw(200, "this is not json", "application/json"), "unusable response"),
        (lambda s: s.raw(200, "plain text body"), "no choices"),
        (lambda s: s.reply_json({"unexpected": True}), "no choices"),
        (lambda s: s.reply_json({"choices": [{"index": 0}]}), "without a usable message"),
        (lambda s: s.reply(None, refusal="I cannot help with that"), "refused the request: I cannot help"),
        (lambda s: s.reply("", finish_reason="stop"), "empty answer"),
        (lambda s: s.reply("partial", finish_reason="content_filter"), "content filter"),
    ],
)
def test_malformed_and_refused_answers(llm, fake_llm, script, match):
    script(fake_llm)
    with pytest.raises(LLMError, match=match):
        llm.complete_text(HELLO)
    assert len(fake_llm.requests) == 1  # not retried


def test_tool_calls_where_text_expected(llm, fake_llm):
    fake_llm.reply_tool_calls(("search_text", "{}"))
    with pytest.raises(LLMError, match="tool calls where text was expected"):
        llm.complete_text(HELLO)


def test_user_message_with_labelled_images():
    message = user_message("look", [("[1] /a.jpg", b"\xff\xd8jpeg")])
    assert message["content"][0] == {"type": "text", "text": "look"}
    assert message["content"][1] == {"type": "text", "text": "[1] /a.jpg"}
    assert message["content"][2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert user_message("plain") == {"role": "user", "content": "plain"}


def _build(sent: int) -> str:
    return f"with {sent} images"


def test_images_sent_when_accepted(llm, fake_llm):
    fake_llm.reply("I see a cat")
    text, sent, notes = llm.complete_with_images("sys", _build, [("[1] a", b"x"), ("[2] b", b"y")])
    assert (text, sent, notes) == ("I see a cat", 2, [])
    assert len(request_images(fake_llm.requests[0])) == 2
    assert "with 2 images" in request_text(fake_llm.requests[0])
    assert llm.vision_known is True


def test_image_refusal_falls_back_to_text_and_is_remembered(llm, fake_llm):
    fake_llm.refuse_images = True
    fake_llm.reply("from metadata")
    fake_llm.reply("again from metadata")
    text, sent, notes = llm.complete_with_images("sys", _build, [("[1] a", b"x")])
    assert (text, sent) == ("from metadata", 0)
    assert IMAGE_REFUSAL_MESSAGE in notes[0]
    assert [len(request_images(r)) for r in fake_llm.requests] == [1, 0]
    assert "with 0 images" in request_text(fake_llm.requests[1])
    assert llm.accepts_images is False
    # the next call does not even try
    text, sent, _ = llm.complete_with_images("sys", _build, [("[1] a", b"x")])
    assert (text, sent) == ("again from metadata", 0)
    assert [len(request_images(r)) for r in fake_llm.requests] == [1, 0, 0]


def test_vision_no_never_sends_images(make_llm, fake_llm):
    client = make_llm(vision="no")
    fake_llm.reply("text only")
    assert client.complete_with_images("sys", _build, [("[1] a", b"x")])[:2] == ("text only", 0)
    assert request_images(fake_llm.requests[0]) == []


def test_other_400_with_images_is_an_error_not_a_fallback(llm, fake_llm):
    fake_llm.error(400, "context length exceeded")
    with pytest.raises(LLMError, match="context length"):
        llm.complete_with_images("sys", _build, [("[1] a", b"x")])
    assert llm.vision_known is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["a", "b"]', ["a", "b"]),
        ('{"queries": ["a"]}', {"queries": ["a"]}),
        ('```json\n{"queries": ["a"]}\n```', {"queries": ["a"]}),
        ('```\n["x"]\n```', ["x"]),
        ('Sure! Here you go: ["dog", "puppy"] Hope it helps.', ["dog", "puppy"]),
        ('Result: {"queries": ["a", "b"]} (end)', {"queries": ["a", "b"]}),
        ("[not json] but later [1, 2]", [1, 2]),
        ('"just a string"', None),
        ("42", None),
        ('{"queries": ["a", ', None),
        ("", None),
        ("no json here", None),
    ],
)
def test_extract_json(text, expected):
    assert extract_json(text) == expected
