"""``img-agent service start|stop|status``: the resident service of a store."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from img_agent.cli import output
from img_agent.cli.context import llm_settings
from img_agent.errors import ServiceError
from img_agent.textsafe import one_line

if TYPE_CHECKING:
    from img_agent.cli.context import CLIContext


COMMANDS = ('service',)
"""The commands this module adds."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``service`` with its ``start``, ``stop`` and ``status`` actions."""
    p = subparsers.add_parser(
        "service", parents=[common], help="start, stop or inspect the store's resident service",
        description="Every command, MCP bridge and Python connect() of a store goes through one resident service, "
        "which keeps the model and index warm. It starts on first use and stops after IMG_AGENT_SERVICE_IDLE_TIMEOUT "
        "seconds without requests (default 1800). These actions manage it by hand (e.g. under systemd or launchd).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", parents=[common], help="start the service (detached; --foreground to stay)")
    start.add_argument("--foreground", action="store_true",
                       help="serve in this process until stopped (for systemd, launchd or a terminal)")
    start.add_argument("--watch", action="append", default=None, metavar="DIR",
                       help="keep DIR (with its sub-folders) in step with the index while the service runs, as "
                       "'img-agent watch' does (repeatable; over IMG_AGENT_WATCH_FOLDERS)")
    start.add_argument("--watch-debounce", type=float, default=None, metavar="SECONDS",
                       help="seconds without file events before watched changes are applied "
                       "(IMG_AGENT_WATCH_DEBOUNCE, default 2)")
    start.set_defaults(func=cmd_start)
    stop = actions.add_parser("stop", parents=[common], help="stop the service (running jobs are cancelled, "
                              "keeping what they added)")
    stop.set_defaults(func=cmd_stop)
    status = actions.add_parser("status", parents=[common],
                                help="pid, version, uptime, clients, memory, model state, jobs")
    status.set_defaults(func=cmd_status)


def _watch_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The watch settings the flags give (folders made absolute from here; the service runs elsewhere).

    Raises:
        NotFoundError, InvalidInputError: a --watch folder does not exist or is no folder.
    """
    given: dict[str, Any] = {}
    if args.watch:
        from img_agent.index.watch import FolderWatch

        debounce = args.watch_debounce if args.watch_debounce is not None else 0.0
        given["watch_folders"] = [str(f) for f in FolderWatch(args.watch, debounce=debounce).folders]
    if args.watch_debounce is not None:
        given["watch_debounce"] = args.watch_debounce
    return given


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the duration (a service started meanwhile inherits it)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def cmd_start(ctx: CLIContext) -> int:
    watch = _watch_settings(ctx.args)
    settings = ctx.settings(**watch)  # checks the values before anything starts
    if ctx.args.foreground:
        from img_agent.service.server import run_service

        service_log = logging.getLogger("img_agent")
        service_log.setLevel(min(service_log.getEffectiveLevel(), logging.INFO))  # the service log tells its story
        for handler in logging.getLogger().handlers:  # a long-running process's log says when
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

        code = run_service(settings, llm_settings(ctx.args))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the store is closed; skip the interpreter's slow teardown of torch and threads
    client = ctx.service()
    env = {"IMG_AGENT_WATCH_FOLDERS": json.dumps(watch["watch_folders"])} if "watch_folders" in watch else {}
    if "watch_debounce" in watch:
        env["IMG_AGENT_WATCH_DEBOUNCE"] = repr(watch["watch_debounce"])
    with _environment(env):
        health = client.ensure()
    watching = client.status().get("watching", [])
    unwatched = [f for f in watch.get("watch_folders", []) if f not in watching]
    if unwatched:
        raise ServiceError(
            f"The service of {health.data_dir} already runs (pid {health.pid}) and watches "
            f"{', '.join(map(one_line, watching)) or 'no folder'}, not {', '.join(map(one_line, unwatched))}. "
            "Stop it with 'img-agent service stop', then start it again with --watch."
        )
    shown = f"; watching {', '.join(map(one_line, watching))}" if watching else ""
    ctx.emit({"running": True, "pid": health.pid, "version": health.version, "data_dir": health.data_dir,
              "socket": str(client.paths.socket), "log": str(client.paths.log), "watching": watching},
             lambda: print(f"img-agent service for {health.data_dir} running (pid {health.pid}){shown}; "
                           f"log: {client.paths.log}"))
    return 0


def cmd_stop(ctx: CLIContext) -> int:
    client = ctx.service()
    health = client.stop()
    if health is None:
        ctx.emit({"stopped": False, "data_dir": str(client.paths.data_dir)},
                 lambda: print(f"No service runs for {client.paths.data_dir}."))
        return 0
    ctx.emit({"stopped": True, "pid": health.pid, "data_dir": health.data_dir},
             lambda: print(f"Stopped the img-agent service of {health.data_dir} (pid {health.pid})."))
    return 0


def cmd_status(ctx: CLIContext) -> int:
    """The running service's status; exit status 3 when none runs (nothing is started)."""
    client = ctx.service()
    if client.health() is None:
        ctx.emit({"running": False, "data_dir": str(client.paths.data_dir)},
                 lambda: print(f"No service runs for {client.paths.data_dir}; the next command starts one.",
                               file=sys.stdout))
        return 3
    status = client.status()
    ctx.emit({"running": True, **status}, lambda: output.print_service_status(status))
    return 0
