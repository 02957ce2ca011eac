"""The ``ask`` and ``chat`` commands and the ``search --expand`` helper, for the main ``img-agent`` CLI.

The main CLI (:mod:`img_agent.cli`) calls :func:`register` with its sub-parsers and the parent
parser holding the global options, and runs ``args.func(ctx)`` with its ``CLIContext``. What the
handlers use of the context: ``ctx.args``, ``ctx.json``, ``ctx.settings()``, ``ctx.engine()``
(opened once, closed by the main CLI) and ``ctx.emit(result, human)``. Domain errors propagate to
the main CLI, which prints them and sets the exit status. This is the only agent module that prints.

``search TEXT --expand`` is handled by :func:`run_rag_search`; :func:`add_rag_arguments` adds its
companion flags (``--variants``, ``--fusion``, ``--rrf-k``, ``--no-explain`` and the LLM flags) to
the search parser.

LLM settings: ``LLM_*`` environment variables and ``.env``, overridden by the ``--llm-*`` flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from img_agent.agent.chat import MAX_TOOL_ROUNDS, ChatSession, ChatTurn, ToolDispatcher
from img_agent.agent.expand import DEFAULT_VARIANTS, MAX_VARIANTS
from img_agent.agent.fuse import DEFAULT_RRF_K, FUSION_METHODS
from img_agent.agent.llm import LLMClient
from img_agent.agent.qa import DEFAULT_QA_K, QAResult, answer_question
from img_agent.agent.rag import RagResult, rag_search
from img_agent.config import LLMSettings
from img_agent.errors import ConfigError, InvalidInputError, LLMNotConfiguredError
from img_agent.results import SearchFilter

if TYPE_CHECKING:
    from img_agent.cli.main import CLIContext

_LLM_FLAGS = {
    "llm_base_url": "base_url",
    "llm_api_key": "api_key",
    "llm_model": "model",
    "llm_timeout": "timeout",
    "llm_retries": "max_retries",
    "llm_vision": "vision",
    "prompts_dir": "prompts_dir",
}


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _has_option(parser: argparse.ArgumentParser, option: str) -> bool:
    return option in parser._option_string_actions  # noqa: SLF001 - argparse has no public lookup


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--llm-*`` flags (each overrides its ``LLM_*`` variable); flags already defined are skipped."""
    group = parser.add_argument_group("LLM (overrides the LLM_* environment variables and .env)")
    options: list[tuple[str, dict[str, Any]]] = [
        ("--llm-base-url", {"metavar": "URL", "help": "OpenAI-compatible endpoint (LLM_BASE_URL)"}),
        ("--llm-api-key", {"metavar": "KEY", "help": "API key (LLM_API_KEY; prefer the environment)"}),
        ("--llm-model", {"metavar": "NAME", "help": "chat model (LLM_MODEL)"}),
        ("--llm-timeout", {"type": float, "metavar": "SECONDS", "help": "seconds per LLM request (LLM_TIMEOUT)"}),
        ("--llm-retries", {"type": int, "metavar": "N", "help": "retries on timeouts, 429, 5xx (LLM_MAX_RETRIES)"}),
        ("--llm-vision", {"choices": ["auto", "yes", "no"], "help": "send thumbnails to the model (LLM_VISION)"}),
        ("--prompts-dir", {"metavar": "DIR", "help": "folder of prompt files overriding the bundled ones"}),
    ]
    for flag, kwargs in options:
        if not _has_option(parser, flag):
            group.add_argument(flag, default=None, **kwargs)


def add_rag_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--expand`` (unless present), ``--variants``, ``--fusion``, ``--rrf-k``, ``--no-explain`` and the LLM flags."""
    group = parser.add_argument_group("LLM-assisted search (--expand)")
    if not _has_option(parser, "--expand"):
        group.add_argument("--expand", action="store_true", help="LLM query expansion + fusion + explanation")
    group.add_argument(
        "--variants", type=int, default=DEFAULT_VARIANTS, metavar="N",
        help=f"query variants besides the original (0..{MAX_VARIANTS}, default {DEFAULT_VARIANTS})",
    )
    group.add_argument("--fusion", choices=FUSION_METHODS, default="rrf", help="how to fuse the variants' results")
    group.add_argument("--rrf-k", type=int, default=DEFAULT_RRF_K, metavar="K", help="RRF constant (default 60)")
    group.add_argument("--no-explain", action="store_true", help="do not ask the LLM to explain the results")
    add_llm_arguments(parser)


def llm_settings_from_args(args: argparse.Namespace) -> LLMSettings:
    """``LLMSettings`` from the environment / ``.env``, overridden by the LLM flags given.

    Raises:
        ConfigError: a flag or ``LLM_*`` value is invalid.
    """
    overrides = {field: getattr(args, flag) for flag, field in _LLM_FLAGS.items() if getattr(args, flag, None) is not None}
    try:
        return LLMSettings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid LLM configuration ({problems}). Fix the --llm-* flag or LLM_* variable.") from None


def build_llm(args: argparse.Namespace) -> LLMClient | None:
    """The LLM client the flags and environment configure, or ``None``."""
    return LLMClient.from_settings(llm_settings_from_args(args))


def build_tools(engine: Any, llm: LLMClient | None) -> tuple[list[dict[str, Any]], ToolDispatcher]:
    """Chat Completions tool schemas and a dispatcher over the tools layer's ``ImageTools``.

    Imported lazily so ``ask`` and ``search --expand`` do not load the tools layer.
    """
    from img_agent.tools.definitions import ImageTools
    from img_agent.tools.openai_tools import chat_completions_tools, dispatch

    tools = ImageTools(engine, llm=llm)

    def run(name: str, arguments: str) -> str:
        return dispatch(tools, name, arguments)

    return chat_completions_tools(tools), run


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``ask`` and ``chat`` to the main CLI's sub-commands (``common``: the global options parser).

    Also gives the core ``search`` command its ``--expand`` companions (variants, fusion, LLM flags).
    """
    if "search" in subparsers.choices:
        add_rag_arguments(subparsers.choices["search"])
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
    ask.add_argument("--prefix", help="only paths starting with this")
    ask.add_argument("--glob", help="only paths matching this glob")
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
    add_llm_arguments(chat)
    chat.set_defaults(func=cmd_chat)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _print_notes(notes: Sequence[str], out: TextIO) -> None:
    for note in notes:
        print(f"note: {note}", file=out)


def print_rag_result(result: RagResult, out: TextIO | None = None) -> None:
    """Readable RAG search output: queries, ranked results, explanation, notes."""
    out = out or sys.stdout
    if len(result.expanded_queries) > 1:
        print("searched: " + " | ".join(result.expanded_queries), file=out)
    if not result.results:
        print("no results", file=out)
    width = len(str(len(result.results)))
    many = len(result.expanded_queries) > 1
    for hit in result.results:
        matched = f"  ({len(hit.matched_queries)}/{len(result.expanded_queries)} queries)" if many else ""
        print(f"{hit.rank:>{width}}. {hit.score:.3f}  #{hit.id}  {hit.path}{matched}", file=out)
    if result.ai_explanation:
        print("\n" + result.ai_explanation.strip(), file=out)
    _print_notes(result.notes, out)


def print_qa_result(result: QAResult, out: TextIO | None = None) -> None:
    """Readable answer followed by the images it rests on."""
    out = out or sys.stdout
    if result.answer:
        print(result.answer.strip() + "\n", file=out)
    print("sources:" if result.sources else "no images found", file=out)
    for source in result.sources:
        cited = "  (cited)" if source.cited else ""
        print(f"  [{source.label}] {source.score:.3f}  #{source.id}  {source.path}{cited}", file=out)
    _print_notes(result.notes, out)


def print_trace(turn: ChatTurn, out: TextIO | None = None) -> None:
    """One line per tool call of a chat turn."""
    out = out or sys.stderr
    for call in turn.tool_calls:
        args = call.arguments if len(call.arguments) <= 200 else call.arguments[:200] + "..."
        print(f"  [tool {call.round}] {call.name}({args}) -> {'error' if call.error else 'ok'}", file=out)


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


def _filter(prefix: str | None, glob: str | None) -> SearchFilter | None:
    return SearchFilter(path_prefix=prefix, path_glob=glob) if (prefix or glob) else None


def run_rag_search(ctx: CLIContext, text: str, k: int | None, flt: SearchFilter | None = None) -> int:
    """``search TEXT --expand``: expansion, fused multi-query retrieval and explanation, printed.

    Reads ``--variants``, ``--fusion``, ``--rrf-k``, ``--no-explain`` and the LLM flags from
    ``ctx.args`` when the search parser has them (see :func:`add_rag_arguments`), else defaults.
    """
    args = ctx.args
    if k is None:
        k = ctx.settings().topk
    result = rag_search(
        ctx.engine(),
        build_llm(args),
        text,
        k,
        expand=True,
        explain=not getattr(args, "no_explain", False),
        fusion=getattr(args, "fusion", "rrf"),
        variants=getattr(args, "variants", DEFAULT_VARIANTS),
        rrf_k=getattr(args, "rrf_k", DEFAULT_RRF_K),
        filter=flt if (flt is not None and flt.active) else None,
    )
    ctx.emit(result, lambda: print_rag_result(result))
    return 0


def cmd_ask(ctx: CLIContext) -> int:
    """``ask QUESTION``: retrieve, answer with citations (or list the images without an LLM)."""
    args = ctx.args
    llm = build_llm(args)
    result = answer_question(
        ctx.engine(), llm, args.question, args.k, expand=not args.no_expand, filter=_filter(args.prefix, args.glob)
    )
    ctx.emit(result, lambda: print_qa_result(result))
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
    llm = build_llm(args)
    if llm is None:
        raise LLMNotConfiguredError(
            "chat needs an LLM: set LLM_BASE_URL and/or LLM_API_KEY (and LLM_MODEL) in the environment or .env, "
            "or pass --llm-base-url."
        )
    tools, dispatch = build_tools(ctx.engine(), llm)
    session = ChatSession(llm, tools, dispatch, max_rounds=args.max_rounds)
    interactive = sys.stdin.isatty()
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
            continue
        if args.trace:
            print_trace(turn)
        if turn.answer:
            print(turn.answer, flush=True)
        _print_notes(turn.notes, sys.stderr)
    return 0
