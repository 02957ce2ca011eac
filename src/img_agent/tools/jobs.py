"""Long jobs: they run in their own thread and outlive the call that started them.

A caller that times out or disconnects leaves its job running; only :meth:`JobRegistry.cancel`
stops one (at its next batch, keeping what it committed). Finished jobs keep their report for
:data:`KEEP_FINISHED` jobs, so a caller can read how far it got later.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel

from img_agent.errors import ImgAgentError, NotFoundError
from img_agent.results import JobInfo, ProgressCallback

log = logging.getLogger(__name__)

KEEP_FINISHED = 50

JobWork = Callable[[ProgressCallback, threading.Event], BaseModel]
"""``work(progress, cancel) -> report``: the job's body, run in the job's thread."""


class _Job:
    def __init__(self, job_id: str, kind: str, description: str) -> None:
        self.info = JobInfo(id=job_id, kind=kind, description=description, state="running", started=time.time())
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self.report: BaseModel | None = None
        self.exception: BaseException | None = None
        self._lock = threading.Lock()

    def progress(self, done: int, total: int | None, message: str) -> None:
        with self._lock:
            self.info = self.info.model_copy(update={"done": done, "total": total, "message": message})

    def finish(self, report: BaseModel | None, failure: str | None, exception: BaseException | None = None) -> None:
        with self._lock:
            self.exception = exception
            stopped = self.cancel.is_set() and getattr(report, "cancelled", True)  # a cancel that came too late: done
            state = "failed" if failure else ("cancelled" if stopped else "done")
            self.report = report
            self.info = self.info.model_copy(update={
                "state": state, "finished": time.time(), "failure": failure,
                "result": report.model_dump(mode="json") if report is not None else None,
            })
        self.finished.set()

    def snapshot(self) -> JobInfo:
        with self._lock:
            return self.info


class JobRegistry:
    """Jobs by id (``add-1``, ``add-2`` ...); one registry is shared by every client of a store's tools."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def start(self, kind: str, description: str, work: JobWork) -> str:
        """Start ``work`` in a new thread; returns the job id at once."""
        job = _Job(f"{kind}-{next(self._numbers)}", kind, description)
        with self._lock:
            self._jobs[job.info.id] = job
            self._forget_old()

        def run() -> None:
            try:
                report = work(job.progress, job.cancel)
            except ImgAgentError as exc:
                job.finish(None, str(exc), exc)
            except Exception as exc:  # noqa: BLE001 - the job's caller may be gone: its error is kept and logged
                log.exception("job %s failed", job.info.id)
                job.finish(None, f"unexpected internal error ({type(exc).__name__}: {exc}); see the log.", exc)
            else:
                job.finish(report, None)

        threading.Thread(target=run, name=f"img-agent-job-{job.info.id}", daemon=True).start()
        return job.info.id

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.finished.is_set()]
        for job in sorted(done, key=lambda j: j.info.started)[: max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[job.info.id]

    def _get(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No job has id {job_id!r}. List jobs with index_status or 'img-agent service status'.")
        return job

    def info(self, job_id: str) -> JobInfo:
        return self._get(job_id).snapshot()

    def wait(self, job_id: str, timeout: float | None = None) -> tuple[JobInfo, BaseModel | None]:
        """Wait for the job to finish (at most ``timeout`` s): its state, and its report once done.
        A job that failed raises its error here."""
        job = self._get(job_id)
        job.finished.wait(timeout)
        if job.exception is not None:
            raise job.exception
        return job.snapshot(), job.report

    def follow(self, job_id: str, *, wait: bool, progress: ProgressCallback | None = None,
               cancel: threading.Event | None = None, poll: float = 0.1) -> tuple[JobInfo, BaseModel | None]:
        """Follow a job for the call that started it: until it ends (``wait``), or return at once (not
        ``wait``) or when the caller leaves (``cancel`` set; the job goes on). Progress is passed to
        ``progress``. Returns the job's state and its report, None while it still runs."""
        while True:
            info, report = self.wait(job_id, timeout=poll if wait else 0)
            if progress is not None and (info.done or info.total):
                progress(info.done, info.total, info.message)
            if info.state != "running":
                return info, report
            if not wait or (cancel is not None and cancel.is_set()):
                return info, None

    def cancel(self, job_id: str) -> JobInfo:
        """Ask a job to stop at its next batch (a rebuild: before its new index replaces the old one).

        Raises:
            NotFoundError: no job has that id.
        """
        job = self._get(job_id)
        job.cancel.set()
        return job.snapshot()

    def list(self) -> list[JobInfo]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in sorted(jobs, key=lambda j: j.info.started)]

    def running(self) -> int:
        with self._lock:
            return sum(not j.finished.is_set() for j in self._jobs.values())

    def cancel_all(self, wait: float = 0.0) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + wait
        for job in jobs:
            job.finished.wait(max(0.0, deadline - time.monotonic()))

