"""The service's own folder watch: configured folders kept in step with the index while it serves.

When ``Settings.watch_folders`` names folders (``IMG_AGENT_WATCH_FOLDERS``, ``img-agent service start
--watch DIR``), the service observes them (:class:`~img_agent.index.watch.FolderWatch`) and then, in a
thread, does what ``img-agent watch`` does: one catch-up (``add_images`` with ``prune``: new and changed
files added, vanished ones dropped), then each settled batch of changes handed to the ``sync_paths``
tool. Both go through the service's own tools and job registry, acting for the store's owner as the
command line does (the owner configured the folders; no model asked for them), so the folders are
recorded as indexed folders and the rules of ``img-agent watch`` hold unchanged. Each batch is one
line in the service log; an error is logged and the watch goes on.

A configured folder that does not exist (or is not a folder) is logged as an error and left out, and
the service serves anyway: any command of the store may start its service, and an unplugged drive
named in the settings must not stop them all.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from img_agent.errors import ImgAgentError, InvalidInputError
from img_agent.index.watch import FolderWatch
from img_agent.results import AddReport
from img_agent.service.client import ROOTS_HEADER
from img_agent.textsafe import one_line
from img_agent.tools.limits import MAX_PATHS_PER_CALL

if TYPE_CHECKING:
    from img_agent.service.server import Service
    from img_agent.tools.image_tools import ImageTools

log = logging.getLogger(__name__)

WATCH_ROOTS = ["/"]
"""The tools of the watch may touch any folder, as the command line's may: the owner chose the folders."""
STOP_JOIN_S = 15.0
"""Seconds :meth:`ServiceWatch.stop` waits for a batch being applied to end."""


def summary(report: AddReport) -> str:
    """One line of counts for a report of the catch-up or of a batch."""
    parts = [f"added {len(report.added):,}"]
    if report.replaced:
        parts.append(f"replaced {len(report.replaced):,}")
    parts.append(f"removed {len(report.removed_missing):,}")
    if report.unchanged:
        parts.append(f"unchanged {report.unchanged:,}")
    parts.append(f"skipped {len(report.skipped):,}")
    if report.job is not None and report.job.state != "done":
        parts.append(f"job {report.job.id} {report.job.state}" + (f": {report.job.failure}" if report.job.failure
                                                                   else ""))
    return ", ".join(parts)


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [list(items[i:i + MAX_PATHS_PER_CALL]) for i in range(0, len(items), MAX_PATHS_PER_CALL)]


def _merge(reports: list[AddReport]) -> AddReport:
    out = AddReport()
    for r in reports:
        out.added += r.added
        out.replaced += r.replaced
        out.removed_missing += r.removed_missing
        out.skipped += r.skipped
        out.unchanged += r.unchanged
        out.job = r.job if r.job is not None else out.job
    return out


def usable_folders(folders: Sequence[Path], debounce: float) -> list[Path]:
    """The ``folders`` that can be watched; each other one is logged as an error."""
    usable: list[Path] = []
    for folder in folders:
        try:
            usable += [f for f in FolderWatch([folder], debounce=debounce).folders if f not in usable]
        except InvalidInputError as exc:
            log.error("not watching %s: %s Fix IMG_AGENT_WATCH_FOLDERS or --watch; the service serves anyway.",
                      one_line(folder), one_line(exc))
    return usable


class ServiceWatch:
    """The watch of one service: :meth:`start` observes and starts the thread, :meth:`stop` ends both."""

    def __init__(self, service: Service, folders: Sequence[Path], debounce: float) -> None:
        self._service = service
        self._watch = FolderWatch(folders, debounce=debounce)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start_for(cls, service: Service) -> ServiceWatch | None:
        """The started watch of the service's ``watch_folders``, or None when none is set or none can be
        watched (logged; the service serves anyway)."""
        settings = service.settings
        if not settings.watch_folders:
            return None
        folders = usable_folders(settings.watch_folders, settings.watch_debounce)
        if not folders:
            return None
        watch = cls(service, folders, settings.watch_debounce)
        try:
            watch.start()
        except ImgAgentError as exc:  # the system refuses to watch so many folders
            log.error("not watching folders: %s", one_line(exc))
            return None
        return watch

    @property
    def folders(self) -> list[str]:
        """The watched folders (none once stopped)."""
        return [] if self._stop.is_set() else [str(f) for f in self._watch.folders]

    def start(self) -> None:
        """Observe first (no change falls between the catch-up and the watch), then catch up and follow."""
        self._watch.start()
        self._thread = threading.Thread(target=self._run, name="img-agent-watch", daemon=True)
        self._thread.start()
        log.info("watching %s (debounce %.2g s)", ", ".join(one_line(f) for f in self.folders), self._watch.debounce)

    def stop(self) -> None:
        """Stop observing and wait for a batch being applied (told to cancel) to end."""
        self._stop.set()
        self._watch.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_JOIN_S)
            if self._thread.is_alive():
                log.warning("the folder watch did not stop within %.0f s", STOP_JOIN_S)

    def _tools(self) -> ImageTools:
        return self._service.tools_for_request({ROOTS_HEADER: json.dumps(WATCH_ROOTS)})

    def _run(self) -> None:
        try:
            self._catch_up()
            for batch in self._watch.batches():
                if self._stop.is_set():
                    break
                self._apply(batch)
        except Exception:  # noqa: BLE001 - the service goes on without its watch, and says why
            log.exception("the folder watch stopped on an unexpected error")

    def _catch_up(self) -> None:
        folders = [str(f) for f in self._watch.folders]
        try:
            tools = self._tools()
            reports = [tools.add_images(chunk, recursive=True, prune=True, cancel=self._stop)
                       for chunk in _chunks(folders)]
        except ImgAgentError as exc:
            log.error("watch catch-up failed: %s", one_line(exc))
            return
        log.info("watch caught up: %s", summary(_merge(reports)))

    def _apply(self, batch: list[str]) -> None:
        reports: list[AddReport] = []
        try:
            tools = self._tools()
            for chunk in _chunks(batch):
                reports.append(tools.sync_paths(chunk, cancel=self._stop))
        except ImgAgentError as exc:  # the next change tries again; the watch goes on
            log.error("watch: applying %d changed path(s) failed: %s", len(batch), one_line(exc))
        except Exception:  # noqa: BLE001 - one bad batch must not end the watch
            log.exception("watch: applying %d changed path(s) failed", len(batch))
        if reports:
            log.info("watch: %d changed path(s): %s", len(batch), summary(_merge(reports)))
