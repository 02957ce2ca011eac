"""Crash consistency: a real subprocess is SIGKILLed mid-add, mid-merge and mid-rebuild, then reopened.

Every add the child acknowledged (add_vectors returned) must be searchable after reopening, and
the store must open consistent and keep working.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder

DIM = 32
BATCH = 500

CHILD = r"""
import sys
import numpy as np
from img_agent.config import Settings
from img_agent.index.engine import Engine

class Stub:
    name, pretrained, dim, image_size = "stub", "none", %(dim)d, 32

def batch(b):
    rng = np.random.default_rng(b)
    x = rng.standard_normal((%(batch)d, %(dim)d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

eng = Engine.open(Settings(data_dir=sys.argv[1], model="stub", index_string="IVF64,SQ8", merge_threshold=10**9), encoder=Stub())
b = 0
while True:
    ids = eng.add_vectors(batch(b), [f"/v/{b}/{i}.jpg" for i in range(%(batch)d)])
    print(f"ACK {b} {ids[0]}", flush=True)
    b += 1
    if b %% 4 == 0:
        print("BEGIN merge", flush=True)
        eng.merge()
    if b %% 10 == 0:
        eng.remove(ids=list(range(ids[0], ids[0] + 50)))
        print("BEGIN rebuild", flush=True)
        eng.rebuild()
""" % {"dim": DIM, "batch": BATCH}


def batch_vectors(b: int) -> np.ndarray:
    rng = np.random.default_rng(b)
    x = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)



def run_and_kill(data_dir, trigger: str, occurrence: int, delay: float) -> dict[int, int]:
    """Start the child, SIGKILL it ``delay`` s after the ``occurrence``-th ``trigger`` line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    acked: dict[int, int] = {}
    seen = 0
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            if line.startswith("ACK"):
                _, b, first = line.split()
                acked[int(b)] = int(first)
            if line.startswith(trigger):
                seen += 1
                if seen == occurrence:
                    time.sleep(delay)
                    break
            assert time.monotonic() < deadline, "child too slow"
        else:
            pytest.fail(f"child ended early: {proc.stderr.read()[-2000:]}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # acks printed before the kill but not yet read still count
    for line in proc.stdout.read().splitlines():
        if line.startswith("ACK"):
            _, b, first = line.split()
            acked[int(b)] = int(first)
    return acked


@pytest.mark.parametrize(
    "trigger,occurrence,delay",
    [
        ("ACK", 3, 0.0),
        ("ACK", 5, 0.004),
        ("BEGIN merge", 1, 0.0),
        ("BEGIN merge", 2, 0.01),
        ("BEGIN merge", 2, 0.03),
        ("BEGIN rebuild", 1, 0.0),
        ("BEGIN rebuild", 1, 0.02),
        ("BEGIN rebuild", 1, 0.08),
    ],
)
def test_sigkill_then_reopen_keeps_every_acknowledged_add(tmp_path, trigger, occurrence, delay):
    data = tmp_path / "data"
    acked = run_and_kill(data, trigger, occurrence, delay)
    assert acked, "the child acknowledged nothing"
    settings = Settings(data_dir=data, model="stub", index_string="IVF64,SQ8", merge_threshold=10**9)
    with Engine.open(settings, encoder=StubEncoder(DIM)) as eng:
        st = eng.status()
        assert st.live == st.main + st.buffer
        removed_per_rebuild = 50
        for b, first in acked.items():
            x = batch_vectors(b)
            stored = eng.store.get(np.arange(first, first + BATCH))
            np.testing.assert_allclose(stored, x, atol=1e-6)
            probe = [100, BATCH - 1]  # rows never removed by the child
            for row in probe:
                hits = eng.search_vectors(x[row][None], 1)[0]
                assert hits[0].id == first + row, f"acknowledged id {first + row} is not searchable"
                assert hits[0].path == f"/v/{b}/{row}.jpg"
        assert st.live >= len(acked) * BATCH - removed_per_rebuild * (len(acked) // 10 + 1)
        # the store keeps working after the crash
        eng.add_vectors(batch_vectors(999), [f"/after/{i}.jpg" for i in range(BATCH)])
        eng.merge()
        eng.rebuild()
        assert eng.status().live == st.live + BATCH
    leftovers = [p.name for p in (data / "index").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith("gen-") and not leftovers[0].endswith(".tmp")
