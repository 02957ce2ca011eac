"""The standing fault harness: every trial under tests/faults is counted, and the counts are reported.

A *trial* is one run of the system under one scenario; *faults* are the faults injected in it (a
SIGKILL, a full disk, a corrupted file, a hostile name, a trickling server...); a *failure* is a trial
whose checks did not hold (acknowledged data lost, a live id that no longer finds itself, a
traceback instead of a clear error, a byte read from outside the allowed roots).

At the end of the run the counts per category are printed, and written as JSON to
``$IMG_AGENT_FAULT_REPORT`` when that is set. ``IMG_AGENT_FAULT_TRIALS`` scales the randomised
trials (default: what fits CI time).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_COUNTS: dict[str, dict[str, int]] = defaultdict(lambda: {"trials": 0, "faults": 0, "failures": 0})


def trials(default: int) -> int:
    """How many randomised trials to run: ``default``, or ``$IMG_AGENT_FAULT_TRIALS`` when set."""
    value = os.environ.get("IMG_AGENT_FAULT_TRIALS")
    return max(1, int(value)) if value else default


class Harness:
    """Counts trials, injected faults and failures per category."""

    @contextmanager
    def trial(self, category: str, faults: int = 1) -> Iterator[None]:
        """One trial of ``category`` injecting ``faults`` faults; an exception inside counts as a failure."""
        counts = _COUNTS[category]
        counts["trials"] += 1
        counts["faults"] += faults
        try:
            yield
        except BaseException:
            counts["failures"] += 1
            raise


@pytest.fixture
def harness() -> Harness:
    return Harness()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not _COUNTS:
        return
    rows = sorted(_COUNTS.items())
    total = {k: sum(c[k] for _, c in rows) for k in ("trials", "faults", "failures")}
    tr = terminalreporter
    tr.section("fault harness")
    tr.write_line(f"{'category':<24} {'trials':>7} {'faults':>7} {'failures':>8}")
    for name, c in rows:
        tr.write_line(f"{name:<24} {c['trials']:>7} {c['faults']:>7} {c['failures']:>8}")
    tr.write_line(f"{'total':<24} {total['trials']:>7} {total['faults']:>7} {total['failures']:>8}")
    report = os.environ.get("IMG_AGENT_FAULT_REPORT")
    if report:
        Path(report).write_text(json.dumps({"categories": dict(rows), "total": total}, indent=2) + "\n")
