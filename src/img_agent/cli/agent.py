"""The LLM commands: ``ask``, ``chat``, and ``search TEXT --expand`` (whose flags :func:`add_rag_arguments` adds).

LLM settings: ``LLM_*`` environment variables and settings files, overridden by the ``--llm-*`` flags
(:func:`img_agent.cli.context.add_llm_arguments`). Retrieval runs in the store's service, which uses
these flags for the call; ``chat`` talks to the LLM from here and runs the model's tool calls there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from img_agent.agent.defaults import (
    DEFAULT_QA_K,
    DEFAULT_RRF_K,
    DEFAULT_VARIANTS,
    FUSION_METHODS,
    MAX_TOOL_ROUNDS,
    MAX_VARIANTS,
)
from img_agent.cli import output
from img_agent.cli.context import CLIContext, add_llm_arguments
from img_agent.cli.filters import add_filter_arguments, filter_from_args
from img_agent.errors import ImgAgentError, InvalidInputError, LLMNotConfiguredError
from img_agent.textsafe import one_line

if TYPE_CHECKING:
    from img_agent.agent.chat import ToolDispatcher
    from img_agent.results import SearchFilter


def add_rag_arguments(parser: argparse.ArgumentParser) -> None:
    """The companions of ``search --expand``: ``--variants``, ``--fusion``, ``--rrf-k``, ``--no-explain``, LLM flags."""
    group = parser.add_argument_group("LLM-assisted search (--expand)")
    group.add_argument(
        "--variants", type=int, default=DEFAULT_VARIANTS, metavar="N",
        help=f"query variants besides the original (0..{MAX_VARIANTS}, default {DEFAULT_VARIANTS})",
    )
    group.add_argument("--fusion", choices=FUSION_METHODS, default="rrf", help="how to fuse the variants' results")
    group.add_argument("--rrf-k", type=int, default=DEFAULT_RRF_K, metavar="K", help="RRF constant (default 60)")
    group.add_argument("--no-explain", action="store_true", help="do not ask the LLM to explain the results")
    add_llm_arguments(parser)


COMMANDS = ('ask', 'chat')
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ask`` and ``chat`` (``common``: the parser of the global options)."""
    ask = subparsers.add_parser(
        "ask",
        parents=[common],
        help="answer a question from the most relevant images (LLM; lists the images without one)",
        description="Retrieve the images most relevant to QUESTION and let the LLM answer from them, citing them "
        "as [n] (thumbnails go to a multimodal model). Without an LLM, lists the most relevant images.",
    )
    ask.add_argument("question", metavar="QUESTION", help="the question, any language")
    ask.add_argument("-k", "--top", dest="k", type=int, default=DEFAULT_QA_K,
                     help=f"images to retrieve (default {DEFAULT_QA_K})")
    add_filter_arguments(ask)
    ask.add_argument("--no-expand", action="store_true", help="search the question as is, without LLM variants")
    add_llm_arguments(ask)
    ask.set_defaults(func=cmd_ask)

    chat = subparsers.add_parser(
        "chat",
        parents=[common],
        help="multi-turn chat in which the LLM searches and manages the index with the tools",
        description="One message per line on stdin, interactive or piped. /reset starts over; /exit, /quit or "
        "end of input ends. With --json each turn (answer, tool calls, notes) is one JSON line.",
    )
    chat.add_argument("--max-rounds", type=int, default=MAX_TOOL_ROUNDS, metavar="N",
                      help=f"rounds of tool calls allowed per message (default {MAX_TOOL_ROUNDS})")
    chat.add_argument("--trace", action="store_true", help="show each tool call on stderr")
    chat.add_argument("-y", "--yes", action="store_true",
                      help="run the tools that remove images or do long index work without asking first "
                      "(otherwise the terminal asks; with no terminal such calls are refused)")
    add_llm_arguments(chat)
    chat.set_defaults(func=cmd_chat)


def confirmation_tools() -> frozenset[str]:
    """The tools whose calls in ``chat`` need the person's confirmation (see ``ToolHints.needs_confirmation``)."""
    from img_agent.tools.image_tools import TOOL_SPECS

    return frozenset(spec.name for spec in TOOL_SPECS if spec.hints.needs_confirmation)


def _accepts(tools: list[dict[str, Any]], name: str, parameter: str) -> bool:
    """Whether tool ``name``'s schema has ``parameter``."""
    for tool in tools:
        function = tool.get("function", tool)
        if function.get("name") == name:
            return parameter in (function.get("parameters") or {}).get("properties", {})
    return False


def _preview(dispatch: ToolDispatcher, name: str, arguments: dict[str, Any]) -> str:
    """What a ``dry_run`` of the call reports, as one line for the question (empty when it fails)."""
    try:
        result = json.loads(dispatch(name, json.dumps({**arguments, "dry_run": True})))
    except (ImgAgentError, ValueError):
        return ""
    if not isinstance(result, dict) or result.get("error"):
        return ""
    removed = result.get("removed")
    if name == "remove_images" and isinstance(removed, list):
        shown = ", ".join(one_line(item) for item in removed[:10]) + (", ..." if len(removed) > 10 else "")
        return f"This would remove {len(removed)} image(s): {shown or 'none'}"
    return "Preview: " + one_line(json.dumps(result, ensure_ascii=False))[:500]


def build_confirm(
    tools: list[dict[str, Any]], dispatch: ToolDispatcher, *, yes: bool, stdin: TextIO, ask_to: TextIO | None
) -> Callable[[str, dict[str, Any]], bool]:
    """How ``chat`` asks the person before a call of :func:`confirmation_tools` runs.

    ``--yes`` allows every call; with a terminal (``ask_to``) the person answers y/N, after a
    ``dry_run`` preview where the tool has one; without a terminal nobody can confirm, so the call
    is refused (the model is told so, and a note says how to allow such calls).
    """

    def confirm(name: str, arguments: dict[str, Any]) -> bool:
        if yes:
            return True
        if ask_to is None:
            print(f"note: {name} was not run: it needs confirmation and there is no terminal to ask; "
                  "pass --yes to allow such calls.", file=sys.stderr)
            return False
        preview = _preview(dispatch, name, arguments) if _accepts(tools, name, "dry_run") else ""
        call = one_line(json.dumps(arguments, ensure_ascii=False))
        ask_to.write(f"The model wants to run {name}({call[:500]}).\n" + (f"{preview}\n" if preview else "")
                     + "Run it? [y/N] ")
        ask_to.flush()
        return stdin.readline().strip().lower() in ("y", "yes")

    return confirm


def build_tools(ctx: CLIContext) -> tuple[list[dict[str, Any]], ToolDispatcher]:
    """Chat Completions tool schemas, and a dispatcher running the model's calls on the store's tools."""
    from img_agent.tools.openai_tools import chat_completions_tools, dispatch

    if ctx.remote:
        client = ctx.client()

        def run(name: str, arguments: str) -> str:
            try:
                return client.request_text("POST", f"/api/tools/{name}/dispatch", arguments or "{}")
            except ImgAgentError as exc:
                return json.dumps({"error": str(exc)})
    else:
        tools = ctx.local_tools()

        def run(name: str, arguments: str) -> str:
            return dispatch(tools, name, arguments)

    return chat_completions_tools(), run


def run_rag_search(ctx: CLIContext, text: str, k: int | None, flt: SearchFilter | None = None) -> int:
    """``search TEXT --expand``: expansion, fused multi-query retrieval and explanation, printed."""
    from img_agent.agent.rag import RagResult
    from img_agent.service.recipes import RAG_PATH, RagRequest

    args = ctx.args
    request = RagRequest(query=text, k=ctx.settings().topk if k is None else k, explain=not args.no_explain,
                         fusion=args.fusion, variants=args.variants, rrf_k=args.rrf_k, where=flt)
    result = _run_recipe(ctx, request, RAG_PATH, RagResult)
    ctx.emit(result, lambda: output.print_rag_result(result))
    return 0


def _run_recipe(ctx: CLIContext, request: Any, path: str, result_type: Any) -> Any:
    """A recipe request run by the store's service (``path``), or with ``--no-service`` in this process."""
    if ctx.remote:
        return result_type.model_validate(ctx.client().request("POST", path, request.model_dump()))
    return request.run(ctx.engine(), ctx.llm())


def cmd_ask(ctx: CLIContext) -> int:
    """``ask QUESTION``: retrieve, answer with citations (or list the images without an LLM)."""
    from img_agent.agent.qa import QAResult
    from img_agent.service.recipes import QA_PATH, QARequest

    args = ctx.args
    request = QARequest(question=args.question, k=args.k, expand=not args.no_expand, where=filter_from_args(args))
    result = _run_recipe(ctx, request, QA_PATH, QAResult)
    ctx.emit(result, lambda: output.print_qa_result(result))
    return 0


def _messages(stdin: TextIO, prompt_to: TextIO | None) -> Iterator[str]:
    """User messages, one per line; shows a prompt on ``prompt_to`` (interactive use) before each."""
    while True:
        if prompt_to is not None:
            prompt_to.write("you> ")
            prompt_to.flush()
        line = stdin.readline()
        if not line:
            return
        yield line.strip()


def cmd_chat(ctx: CLIContext) -> int:
    """``chat``: read messages from stdin, answer each with tool use, until /exit or end of input."""
    args = ctx.args
    if args.max_rounds < 1:
        raise InvalidInputError("--max-rounds must be at least 1.")
    llm = ctx.llm()
    if llm is None:
        raise LLMNotConfiguredError(
            "chat needs an LLM: set LLM_BASE_URL and/or LLM_API_KEY (and LLM_MODEL) in the environment or .env, "
            "or pass --llm-base-url."
        )
    from img_agent.agent.chat import ChatSession

    tools, dispatch = build_tools(ctx)
    interactive = sys.stdin.isatty()
    confirm = build_confirm(tools, dispatch, yes=args.yes, stdin=sys.stdin, ask_to=sys.stderr if interactive else None)
    session = ChatSession(llm, tools, dispatch, max_rounds=args.max_rounds, confirm_tools=confirmation_tools(),
                          confirm=confirm)
    if interactive and not ctx.json:
        print(f"img-agent chat with {llm.model} ({len(tools)} tools). /reset starts over, /exit or Ctrl-D ends.",
              file=sys.stderr)
    for message in _messages(sys.stdin, sys.stderr if interactive else None):
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            session.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        turn = session.send(message)
        if ctx.json:
            print(turn.model_dump_json(), flush=True)
        else:
            output.print_turn(turn, trace=args.trace)
    return 0
