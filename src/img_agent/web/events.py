"""A job's progress as server-sent events: ``progress`` whenever it changes, then one ``done``.

Each event's data is the job's :class:`~img_agent.results.JobInfo` as JSON. Changes are looked for
:data:`POLL_S` apart, so a client gets at most ten events a second however fast the job reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from img_agent.results import JobInfo
from img_agent.tools.jobs import JobRegistry

POLL_S = 0.1
KEEPALIVE_S = 15.0
"""Seconds without a change after which a comment line keeps proxies from closing the stream."""


def sse(event: str, info: JobInfo) -> str:
    return f"event: {event}\ndata: {info.model_dump_json()}\n\n"


async def job_events(jobs: JobRegistry, job_id: str) -> AsyncIterator[str]:
    """The event stream of job ``job_id`` (which exists: check with ``jobs.info`` first)."""
    last: tuple | None = None
    quiet = 0.0
    while True:
        info = jobs.info(job_id)
        if info.state != "running":
            yield sse("done", info)
            return
        seen = (info.done, info.total, info.message)
        if seen != last:
            last, quiet = seen, 0.0
            yield sse("progress", info)
        elif quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await anyio.sleep(POLL_S)
        quiet += POLL_S
