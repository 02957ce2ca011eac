"""``img-agent service start|stop|status``: the resident service of a store."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from img_agent.cli import output
from img_agent.cli.context import llm_settings

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
    start.set_defaults(func=cmd_start)
    stop = actions.add_parser("stop", parents=[common], help="stop the service (running jobs are cancelled, "
                              "keeping what they added)")
    stop.set_defaults(func=cmd_stop)
    status = actions.add_parser("status", parents=[common],
                                help="pid, version, uptime, clients, memory, model state, jobs")
    status.set_defaults(func=cmd_status)


def cmd_start(ctx: CLIContext) -> int:
    if ctx.args.foreground:
        from img_agent.service.server import run_service

        service_log = logging.getLogger("img_agent")
        service_log.setLevel(min(service_log.getEffectiveLevel(), logging.INFO))  # the service log tells its story

        return run_service(ctx.settings(), llm_settings(ctx.args))
    client = ctx.service()
    health = client.ensure()
    ctx.emit({"running": True, "pid": health.pid, "version": health.version, "data_dir": health.data_dir,
              "socket": str(client.paths.socket), "log": str(client.paths.log)},
             lambda: print(f"img-agent service for {health.data_dir} running (pid {health.pid}); "
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
