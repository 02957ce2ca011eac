"""Keeping indexed folders in step with their files: a recursive watch, debounced into batches.

:class:`FolderWatch` observes folders (``watchdog``) and collects the paths of image files (by the
walker's extensions, :func:`~img_agent.embed.images.is_image_name`) and folders that were created,
changed, moved or deleted. Once no event came for ``debounce`` seconds (or changes kept coming for
``max_delay``), :meth:`FolderWatch.next_batch` hands them over, each path once: a burst of writes to
one file is one path in one batch.

:func:`apply_changes` brings the index in line with such a batch. Each path is judged as it is
then: a path that is gone is removed from the index (with whatever was indexed under it), like
pruning: not remembered as removed by request. A path that exists is added through the one add
path, as files found by a folder walk: a file removed by request stays out, and every other skip
has its usual per-file reason. Removals come first, so a renamed file ends up indexed under its new
path (its content is no duplicate of an entry that is gone).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

from img_agent.config import DEFAULT_WATCH_DEBOUNCE_S
from img_agent.embed.images import is_image_name
from img_agent.errors import ConfigError, InvalidInputError, NotFoundError
from img_agent.results import AddReport, ProgressCallback

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent

    from img_agent.embed.images import Confinement
    from img_agent.index.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = DEFAULT_WATCH_DEBOUNCE_S
"""Seconds without a file event before a batch of changes is applied."""
MAX_DELAY_FACTOR = 15.0
"""Changes that keep coming are applied at the latest this many debounce periods (and 30 s) after the first."""
_EVENTS = frozenset({"created", "modified", "moved", "deleted"})


def changed_paths(event: FileSystemEvent) -> list[str]:
    """The paths an event concerns that the index may care about: image files, and folders that appeared,
    moved or vanished (a folder's own "modified" says only that an entry inside it changed)."""
    if event.event_type not in _EVENTS or (event.is_directory and event.event_type == "modified"):
        return []
    raw = [event.src_path] + ([event.dest_path] if event.event_type == "moved" else [])
    paths = [os.fsdecode(p) for p in raw if p]
    return paths if event.is_directory else [p for p in paths if is_image_name(p)]


class FolderWatch:
    """Watches ``folders`` recursively; :meth:`next_batch` / :meth:`batches` give the settled changes.

    Use as a context manager (or :meth:`start` / :meth:`stop`).

    Raises:
        NotFoundError: a folder does not exist.
        InvalidInputError: a path is not a folder, or no folder is given, or ``debounce`` is negative.
        ConfigError: (from :meth:`start`) the system refuses to watch the folders (too many to watch).
    """

    def __init__(self, folders: Sequence[str | Path], *, debounce: float = DEFAULT_DEBOUNCE_S,
                 max_delay: float | None = None) -> None:
        if not folders:
            raise InvalidInputError("Name at least one folder to watch.")
        if not debounce >= 0:
            raise InvalidInputError(f"The debounce must be 0 or more seconds; got {debounce}.")
        resolved = []
        for folder in folders:
            real = Path(os.path.realpath(Path(folder).expanduser()))
            if not real.exists():
                raise NotFoundError(f"Cannot watch {folder}: no such folder. Check the path.")
            if not real.is_dir():
                raise InvalidInputError(f"Cannot watch {folder}: not a folder. Watch the folder that holds it.")
            if real not in resolved:
                resolved.append(real)
        self.folders = resolved
        self.debounce = float(debounce)
        self.max_delay = max(self.debounce * MAX_DELAY_FACTOR, 30.0) if max_delay is None else float(max_delay)
        self._pending: dict[str, None] = {}
        self._first = self._last = 0.0
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._observer: object | None = None

    # -- the observer ---------------------------------------------------------------------------
    def start(self) -> Self:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class _Collect(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                watch.note(changed_paths(event))

        observer = Observer()
        handler = _Collect()
        observer.daemon = True
        try:
            for folder in self.folders:
                observer.schedule(handler, str(folder), recursive=True)
            observer.start()
        except OSError as exc:  # e.g. the system's limit on watched folders (inotify max_user_watches)
            observer.stop()
            raise ConfigError(
                f"Cannot watch {', '.join(map(str, self.folders))}: {exc.strerror or exc}. With very many "
                "sub-folders, raise the limit (Linux: sysctl fs.inotify.max_user_watches=524288), or watch fewer."
            ) from exc
        self._observer = observer
        return self

    def stop(self) -> None:
        """Stop observing; a waiting :meth:`next_batch` returns None."""
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            observer.join(timeout=5)  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- batches --------------------------------------------------------------------------------
    def note(self, paths: Sequence[str]) -> None:
        """Record changed ``paths`` (the observer calls this; so may a caller that knows of changes)."""
        if not paths:
            return
        now = time.monotonic()
        with self._cond:
            if not self._pending:
                self._first = now
            self._last = now
            for path in paths:
                self._pending.pop(path, None)
                self._pending[path] = None
            self._cond.notify_all()

    def _due(self, now: float) -> float | None:
        """Seconds until the pending batch settles (0: now), or None when nothing is pending."""
        if not self._pending:
            return None
        return max(0.0, min(self._last + self.debounce, self._first + self.max_delay) - now)

    def next_batch(self, timeout: float | None = None) -> list[str] | None:
        """The next settled batch of changed paths, in order of their last event; ``[]`` when ``timeout``
        passed first, None once stopped. Waits in short steps, so Ctrl-C interrupts it at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._stopped.is_set():
                now = time.monotonic()
                due = self._due(now)
                if due == 0.0:
                    batch = list(self._pending)
                    self._pending.clear()
                    return batch
                if deadline is not None and now >= deadline:
                    return []
                wait = 0.5 if due is None else min(due, 0.5)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._cond.wait(wait)
        return None

    def batches(self) -> Iterator[list[str]]:
        """Every settled batch until :meth:`stop`."""
        while (batch := self.next_batch()) is not None:
            yield batch


def apply_changes(engine: Engine, paths: Sequence[str | Path], *, confine: Confinement | None = None,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> AddReport:
    """Bring the index in line with ``paths`` as they are now (see the module text); the add's report, with
    the ids of images removed because their path is gone in ``removed_missing``."""
    gone: list[str] = []
    present: list[str] = []
    for raw in paths:
        path = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if not os.path.lexists(path):
            gone.append(path)
        elif os.path.isdir(path) or is_image_name(path):
            present.append(path)
    removed: list[int] = []
    if gone:
        try:
            removed = engine.remove(paths=gone, exclude=False).removed
        except NotFoundError:
            log.debug("none of the vanished paths was indexed: %s", gone)
    report = AddReport()
    if present:
        report = engine.add_paths(present, walked=True, confine=confine, progress=progress, cancel=cancel)
    return report.model_copy(update={"removed_missing": removed + report.removed_missing})
