"""What every benchmark runner shares: the progress bar, the command echo, writing result files.

A runner takes the parsed ``img-agent bench`` options (``out``, ``quick``, ``seed``, ``n``, ...),
measures, writes ``<name>.json`` (everything) and ``<name>.md`` (tables, plus plots) into
``options.out`` and returns the markdown path; the command line prints it. Progress goes to stderr.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from img_agent.index.durable import write_atomic

# ``progress(advance, message)``: ``advance`` steps done since the last call, and what runs now
Progress = Callable[[int, str], None]


def no_progress(_advance: int, _message: str) -> None:
    """A :data:`Progress` that shows nothing."""


class ProgressBar:
    """A :data:`Progress` drawing a tqdm bar of ``total`` steps on stderr (or nothing when not ``enabled``)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)

    def __call__(self, advance: int, message: str) -> None:
        if self.bar is not None:
            if advance:
                self.bar.update(advance)
            self.bar.set_postfix_str(message[:60], refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def command_line(options: Any) -> str:
    """The command that produced a result, for its metadata: ``options.argv`` when set, else this process's."""
    argv: Sequence[str] = getattr(options, "argv", None) or sys.argv
    return " ".join(shlex.quote(a) for a in argv)


def write_json(path: Path, obj: dict) -> None:
    """Write a result atomically (a crash leaves the previous file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_result(out: Path, name: str, result: dict, markdown: str) -> Path:
    """``<name>.json`` and ``<name>.md`` in ``out``; returns the markdown path."""
    write_json(out / f"{name}.json", result)
    md = out / f"{name}.md"
    md.write_text(markdown)
    return md
