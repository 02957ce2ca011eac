"""Commands that never need the model answer without importing torch or open_clip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "open_clip", "torchvision", "onnxruntime")

WRAPPER = textwrap.dedent(
    """
    import json, sys
    from img_agent.cli.main import main

    report = []
    for argv in json.loads(sys.argv[1]):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        report.append({"argv": argv, "code": code, "heavy": sorted(m for m in %r if m in sys.modules)})
    print("REPORT=" + json.dumps(report))
    """
    % (HEAVY,)
)


def test_status_remove_and_index_of_a_missing_path_import_no_model_code(tmp_path):
    data = tmp_path / "store"
    commands = [
        ["--no-service", "--data-dir", str(data), "status"],
        ["--no-service", "--data-dir", str(data), "remove", "12345"],
        ["--no-service", "--data-dir", str(data), "index", str(tmp_path / "missing")],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(commands)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("REPORT=")), None)
    assert line is not None, proc.stdout + proc.stderr
    report = json.loads(line.removeprefix("REPORT="))
    assert [r["code"] for r in report] == [0, 1, 1], proc.stderr  # unknown id and missing path are errors
    assert "12345" in proc.stderr and "missing" in proc.stderr
    for entry in report:
        assert entry["heavy"] == [], f"{entry['argv']} imported {entry['heavy']}"
