"""A multi-turn chat in which the model calls img-agent's tools.

The session is given the tool schemas (Chat Completions ``{"type": "function", "function": {...}}``
dicts) and a dispatcher, a callable ``(name, arguments_json) -> result_json``; whoever builds the
session decides which tools those are. Each user message runs a loop: ask the model; if it calls
tools, run them and hand every result back, then ask again; stop at a text answer or after
:data:`MAX_TOOL_ROUNDS` rounds of tool calls (then the model is asked once more, tools disabled,
for a final answer).

A failing tool call never ends the turn: an unknown tool name, arguments that are not a JSON
object, or an error from the tool all go back to the model as the tool's result
(``{"error": "..."}``) so it can correct itself.

Tool results reach the model as JSON, always: text inside them (file names, tags, descriptions)
stays inside quoted strings, with line separators and bidi controls escaped
(:func:`~img_agent.textsafe.safe_json`), and the system prompt says such text is data, never
instructions. Calls of the tools named in ``confirm_tools`` (destructive or expensive ones) run
only when the ``confirm`` callable says the person allows them; otherwise the model is told the
call was not run because the person declined.

All the LLM work of one user message shares one deadline (``LLMSettings.deadline``); when it
passes the turn ends with a note, as for any LLM failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from img_agent.agent.defaults import MAX_TOOL_ROUNDS
from img_agent.agent.llm import LLMClient, Message
from img_agent.agent.prompts import render_prompt
from img_agent.errors import (
    ImgAgentError,
    InvalidInputError,
    LLMError,
    LLMNotConfiguredError,
)
from img_agent.textsafe import escape_json_text, safe_json

logger = logging.getLogger(__name__)

ToolDispatcher = Callable[[str, str], str]
"""``dispatch(tool_name, arguments_json) -> result_json``; errors come back as ``{"error": ...}`` JSON."""

ConfirmCall = Callable[[str, dict[str, Any]], bool]
"""``confirm(tool_name, arguments) -> bool``: whether the person allows this call to run."""

MAX_TOOL_RESULT_CHARS = 20_000
"""Tool results longer than this are cut before they go to the model."""

DECLINED = "Not run: the person declined this call. Do not repeat it; tell the user, or ask what they want instead."
"""The result the model gets for a call the person did not confirm."""


class ToolCallRecord(BaseModel):
    """One tool call the model made and what it got back."""

    round: int = Field(description="1-based tool round within the turn.")
    id: str = Field(description="The call id the model gave (or one we made up).")
    name: str
    arguments: str = Field(description="Arguments as the model sent them (JSON text).")
    result: str = Field(description="What the model was given back (JSON text).")
    error: bool = Field(description="Whether the result is an error.")
    declined: bool = Field(False, description="Whether the call needed confirmation and was not run without it.")


class ChatTurn(BaseModel):
    """The outcome of one user message."""

    answer: str = Field(description="The model's final text (empty when the LLM failed).")
    tool_calls: list[ToolCallRecord] = Field(default_factory=list, description="Every tool call, in order.")
    rounds: int = Field(0, description="Rounds of tool calls used.")
    stop_reason: Literal["answer", "round_limit", "llm_error"] = Field(description="Why the turn ended.")
    notes: list[str] = Field(default_factory=list, description="What went wrong, if anything.")


def _error_json(message: str) -> str:
    return safe_json({"error": message})


def _as_json(result: object) -> str:
    """A tool's result as JSON text for the model: JSON kept (unsafe characters escaped), anything
    else wrapped as ``{"result": ...}``, and a long result cut inside a JSON string."""
    if not isinstance(result, str):
        result = safe_json(result, default=str)
    else:
        try:
            json.loads(result)
        except ValueError:
            result = safe_json({"result": result})
        else:
            result = escape_json_text(result)
    if len(result) > MAX_TOOL_RESULT_CHARS:
        return safe_json(
            {"truncated": True, "total_chars": len(result), "partial_result": result[:MAX_TOOL_RESULT_CHARS]}
        )
    return result


def _is_error_result(result: str) -> bool:
    try:
        value = json.loads(result)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("error") is not None


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    """Function names in Chat Completions tool schemas (also accepts the flat Responses shape)."""
    names: list[str] = []
    for tool in tools:
        function = tool.get("function", tool)
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            names.append(name)
    return names


class ChatSession:
    """A conversation with tool use; keeps the message history between :meth:`send` calls.

    Args:
        llm: the model (required: chat has no meaning without one).
        tools: Chat Completions tool schemas offered to the model.
        dispatch: runs a tool call and returns its JSON result.
        max_rounds: hard limit on rounds of tool calls per user message (default 10).
        system_prompt: replaces the rendered ``chat_system`` prompt.
        confirm_tools: names of the tools whose calls need the person's confirmation.
        confirm: asks the person about one such call; without it, those calls are never run.

    Raises:
        LLMNotConfiguredError: ``llm`` is ``None``.
    """

    def __init__(
        self,
        llm: LLMClient | None,
        tools: Sequence[dict[str, Any]],
        dispatch: ToolDispatcher,
        *,
        max_rounds: int = MAX_TOOL_ROUNDS,
        system_prompt: str | None = None,
        confirm_tools: Iterable[str] = (),
        confirm: ConfirmCall | None = None,
    ) -> None:
        if llm is None:
            raise LLMNotConfiguredError(
                "Chat needs an LLM: set LLM_BASE_URL and/or LLM_API_KEY (and LLM_MODEL), in the environment or .env."
            )
        if max_rounds < 1:
            raise InvalidInputError(f"max_rounds must be at least 1, got {max_rounds}.")
        self.llm = llm
        self.tools = list(tools)
        self.dispatch = dispatch
        self.max_rounds = max_rounds
        self._names = set(tool_names(self.tools))
        self.confirm_tools = frozenset(confirm_tools)
        self.confirm = confirm
        if system_prompt is None:
            system_prompt = render_prompt(
                "chat_system",
                llm.settings.prompts_dir,
                tools=", ".join(tool_names(self.tools)) or "none",
                max_rounds=max_rounds,
            )
        self._system: Message = {"role": "system", "content": system_prompt}
        self._history: list[Message] = []

    @property
    def messages(self) -> list[Message]:
        """The full conversation sent to the model, system prompt first (a copy)."""
        return [self._system, *self._history]

    def extend_history(self, messages: Iterable[Message]) -> None:
        """Continue a conversation held elsewhere: its earlier messages (no system prompt), oldest first."""
        self._history.extend(messages)

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self._history.clear()

    def send(self, text: str) -> ChatTurn:
        """Add a user message and run the model (and its tool calls) to an answer.

        Never raises for LLM or tool trouble: an LLM failure (the turn's deadline passing included)
        ends the turn with ``stop_reason="llm_error"`` and a note; the history stays valid for the
        next message.
        """
        self._history.append({"role": "user", "content": text})
        with self.llm.budget():
            return self._turn()

    def _turn(self) -> ChatTurn:
        trace: list[ToolCallRecord] = []
        for round_no in range(1, self.max_rounds + 1):
            try:
                message = self.llm.complete(self.messages, tools=self.tools or None)
            except LLMError as exc:
                return self._failed(exc, trace, round_no - 1)
            calls = list(message.tool_calls or [])
            if not calls:
                answer = (message.content or "").strip()
                self._history.append({"role": "assistant", "content": answer})
                return ChatTurn(answer=answer, tool_calls=trace, rounds=round_no - 1, stop_reason="answer")
            self._run_calls(round_no, message.content, calls, trace)
        return self._final_answer(trace)

    # ------------------------------------------------------------------ internals

    def _run_calls(self, round_no: int, content: str | None, calls: list[Any], trace: list[ToolCallRecord]) -> None:
        wire_calls: list[dict[str, Any]] = []
        results: list[Message] = []
        for index, call in enumerate(calls):
            call_id = getattr(call, "id", None) or f"call_{round_no}_{index}"
            function = getattr(call, "function", None)
            name = getattr(function, "name", None) or ""
            arguments = getattr(function, "arguments", None) or ""
            wire_calls.append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
            result, declined = self._call_tool(name, arguments)
            trace.append(
                ToolCallRecord(
                    round=round_no,
                    id=call_id,
                    name=name,
                    arguments=arguments,
                    result=result,
                    error=_is_error_result(result),
                    declined=declined,
                )
            )
            results.append({"role": "tool", "tool_call_id": call_id, "content": result})
        self._history.append({"role": "assistant", "content": content, "tool_calls": wire_calls})
        self._history.extend(results)

    def _call_tool(self, name: str, arguments: str) -> tuple[str, bool]:
        """Run one tool call: ``(JSON result, declined)``; every failure becomes an ``{"error": ...}`` result."""
        if name not in self._names:
            known = ", ".join(sorted(self._names)) or "none"
            return _error_json(f"Unknown tool {name!r}. Available tools: {known}."), False
        text = arguments.strip() or "{}"
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            return _error_json(
                f"Arguments for {name} are not valid JSON ({exc.msg} at position {exc.pos}); send a JSON object."
            ), False
        if not isinstance(parsed, dict):
            return _error_json(f"Arguments for {name} must be a JSON object, got {type(parsed).__name__}."), False
        if name in self.confirm_tools and not self._confirmed(name, parsed):
            return _error_json(DECLINED), True
        try:
            result = self.dispatch(name, text)
        except ImgAgentError as exc:
            return _error_json(str(exc)), False
        except Exception as exc:  # the model must see any failure, and the turn must go on
            logger.exception("Tool %s raised", name)
            return _error_json(f"Tool {name} failed unexpectedly: {type(exc).__name__}: {exc}"), False
        return _as_json(result), False

    def _confirmed(self, name: str, arguments: dict[str, Any]) -> bool:
        """Whether the person allows this call; no way to ask, or a failing question, means no."""
        if self.confirm is None:
            return False
        try:
            return bool(self.confirm(name, arguments))
        except Exception:  # a confirmation that cannot be had is a refusal
            logger.exception("Asking to confirm %s failed; the call is not run", name)
            return False

    def _final_answer(self, trace: list[ToolCallRecord]) -> ChatTurn:
        """After the round limit: ask once more with tools disabled."""
        note = f"Stopped after {self.max_rounds} rounds of tool calls (the limit)."
        logger.warning(note)
        self._history.append(
            {
                "role": "user",
                "content": f"[img-agent] The tool-call limit ({self.max_rounds} rounds) is reached. "
                "Answer now from what the tools returned; do not call tools.",
            }
        )
        try:
            message = self.llm.complete(self.messages, tools=self.tools or None, tool_choice="none")
        except LLMError as exc:
            turn = self._failed(exc, trace, self.max_rounds)
            turn.stop_reason = "round_limit"
            turn.notes.insert(0, note)
            return turn
        answer = (message.content or "").strip()
        notes = [note]
        if message.tool_calls:  # a server ignoring tool_choice="none": the calls are not run
            notes.append("The model asked for more tool calls after the limit; they were not run.")
        self._history.append({"role": "assistant", "content": answer})
        return ChatTurn(answer=answer, tool_calls=trace, rounds=self.max_rounds, stop_reason="round_limit", notes=notes)

    def _failed(self, exc: LLMError, trace: list[ToolCallRecord], rounds: int) -> ChatTurn:
        logger.warning("Chat turn failed: %s", exc)
        return ChatTurn(
            answer="",
            tool_calls=trace,
            rounds=rounds,
            stop_reason="llm_error",
            notes=[f"The LLM failed: {exc}"],
        )
