"""The ``img-agent`` command line: a thin adapter over the engine, for people and scripts.

Global options (``--data-dir``, ``--model``, ``--pretrained``, ``--device``, ``--json``, ``-v``)
work before or after the command. Each command group lives in its own module and adds its
commands here: :mod:`~img_agent.cli.store`, :mod:`~img_agent.cli.doctor`, :mod:`~img_agent.cli.tools`,
:mod:`~img_agent.cli.agent`, :mod:`~img_agent.cli.web`,
:mod:`~img_agent.cli.bench`. A handler gets a :class:`~img_agent.cli.context.CLIContext` and
returns the exit status; a domain error becomes ``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from img_agent.version import __version__
from img_agent.cli import agent, bench, doctor, output, service, store, tools, web
from img_agent.cli import watch
from img_agent.cli import duplicates
from img_agent.cli import notes
from img_agent.cli.context import CLIContext
from img_agent.locations import ENV_FILE_VARIABLE
from img_agent.errors import ConfigError, ImgAgentError


def _global_options() -> argparse.ArgumentParser:
    """Options valid before or after the command (SUPPRESS keeps a later default from erasing them)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="store folder (env IMG_AGENT_DATA_DIR)")
    g.add_argument("--model", default=argparse.SUPPRESS, help="open_clip model, or tiny-test (env IMG_AGENT_MODEL)")
    g.add_argument("--pretrained", default=argparse.SUPPRESS,
                   help="pretrained tag or local checkpoint file (env IMG_AGENT_PRETRAINED)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=argparse.SUPPRESS)
    g.add_argument("--env-file", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                   help=f"settings file (dotenv syntax) over the user config file (env {ENV_FILE_VARIABLE})")
    g.add_argument("--no-service", action="store_true", default=argparse.SUPPRESS,
                   help="open the store in this process instead of going through its service")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log to stderr (-vv: debug)")
    return p


GROUPS = (store, notes, duplicates, watch, doctor, service, web, tools, agent, bench)
"""The command modules, in the order ``--help`` lists their commands."""
_VALUE_OPTIONS = frozenset({"--data-dir", "--model", "--pretrained", "--device", "--env-file"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command tree: every group, or only the group of ``command`` (a quicker start for one command)."""
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="img-agent", parents=[common],
        description="Agent-facing image search: CLIP embeddings in an incremental Faiss index.",
    )
    parser.add_argument("--version", action="version", version=f"img-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        if command is None or command in group.COMMANDS:
            group.register(sub, common)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is no option nor an option's value), if known."""
    words = iter(argv)
    for word in words:
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word if any(word in group.COMMANDS for group in GROUPS) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, configure logging, run the command's handler; returns the exit status.

    A domain error is ``error: ...`` on stderr, or with ``--json`` ``{"error": {"type", "message"}}`` on
    stdout, and exit status 1. Output cut short by its reader (``| head``) ends quietly.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(getattr(args, "verbose", 0), 2), stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx = CLIContext(args)
    try:
        env_file = getattr(args, "env_file", None)
        if env_file is not None:
            if not env_file.expanduser().is_file():
                raise ConfigError(f"--env-file {env_file}: no such file.")
            os.environ[ENV_FILE_VARIABLE] = str(env_file.expanduser().resolve())
        return int(args.func(ctx) or 0)
    except ImgAgentError as exc:
        if ctx.json:
            output.print_json({"error": {"type": type(exc).__name__, "message": str(exc)}})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything acknowledged so far is saved.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader stopped reading: no traceback, and no second error when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        ctx.close()
