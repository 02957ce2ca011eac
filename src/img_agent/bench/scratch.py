"""Running a benchmark scenario in a scratch folder: result metadata, the folder removed after, files written."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from img_agent.bench.common import command_line, write_result


def run_in_scratch(options: Any, name: str, *, n: int, nq: int, scenario: Callable[[Path], dict],
                   markdown: Callable[[dict], str]) -> Path:
    """Run ``scenario(folder)`` in a fresh temporary folder and write ``<name>.json`` / ``.md`` to ``options.out``."""
    from img_agent.bench import report

    t0 = time.time()
    result = report.new_result(name, command=command_line(options), quick=options.quick, config={"n": n, "nq": nq})
    work = Path(tempfile.mkdtemp(prefix=f"img-agent-{name}-"))
    try:
        result["result"] = scenario(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish_result(result, t0)
    return write_result(options.out, name, result, markdown(result))
