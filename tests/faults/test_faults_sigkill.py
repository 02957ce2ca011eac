"""Seeded random-point SIGKILL harness: a real child process adds, removes, merges, checkpoints and
rebuilds; the parent SIGKILLs it at a seeded random point, reopens the store and checks DESIGN.md's
durability promise ("an add that returned is never lost").

Two kinds of kill points, in each phase (``add`` = add_vectors / remove, ``merge`` = merge /
checkpoint, ``rebuild``):

- ``time``: a random delay after a random line the child prints as it starts or finishes an operation;
- ``syscall``: just before the Nth call of ``os.fsync`` / ``os.replace`` / ``os.rename`` /
  ``os.unlink`` / ``os.remove`` / ``os.truncate`` / ``os.ftruncate`` made inside that phase. The
  child wraps those functions at startup; on the chosen call it SIGKILLs itself before calling
  through. Which function and which N are drawn from the trial's seed, weighted by how often each is
  called in that phase (counted once per session by a calibration run of the same workload).

After the kill, in the parent, the reopened store must hold:

- every acknowledged add (add_vectors returned, ``ACK`` printed) that was not acknowledged-removed
  or replaced: live, with the path it was added with, its exact vector, and found first by a search
  with its own vector;
- no acknowledged-removed or replaced id: absent from the catalog and never returned by a search;
- nothing else but the one operation in flight (its effect may or may not be there, whole);
- a working store: one more add is searchable, a merge and a rebuild succeed, a second reopen agrees;
- no stray files: ``index/`` holds only the current generation file, no ``*.tmp`` anywhere.

Every trial is seeded. ``IMG_AGENT_FAULT_SEED`` sets the base seed (trial ``i`` uses base + i), so a
failure message gives the one command that replays that trial. ``IMG_AGENT_FAULT_TRIALS`` sets the
trials per phase x kind case.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder


def _fault_conftest():
    """The fault harness conftest of this folder, loaded by path.

    ``from conftest import trials`` is not reliable: tests/, tests/agent/, tests/tools/ and
    tests/faults/ each have a ``conftest`` module and pytest swaps ``sys.modules['conftest']`` as it
    loads them. ``trials`` is a pure function, so a private copy of the module gives the same answer.
    """
    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("_img_agent_faults_conftest_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Read at import (collection) time: the autouse ``_hermetic_env`` fixture of tests/conftest.py removes
# every IMG_AGENT_* variable from the environment before each test body runs.
DEFAULT_TRIALS = 7
TRIALS = _fault_conftest().trials(DEFAULT_TRIALS)
BASE_SEED = int(os.environ.get("IMG_AGENT_FAULT_SEED") or 20_240_611)
VERBOSE = bool(os.environ.get("IMG_AGENT_FAULT_VERBOSE"))  # one line per trial (run pytest with -s)

DIM = 32
BATCH_MAX = 250  # rows per add: uniform in 1..BATCH_MAX (a tenth of the batches are 1..3 rows)
INDEX_STRING = "IVF16,SQ8"  # trains once 16 * 39 = 624 vectors are live: Flat first, then IVF
CALIBRATION_ROUNDS = 15
CALIBRATION_SEED = 1  # fixed, so that a trial's kill point depends on its own seed only
ROUND_CAP = 4 * CALIBRATION_ROUNDS  # a child that reaches this many rounds unkilled ends itself (DONE)
CHILD_DEADLINE_S = 45.0  # a child that neither dies nor ends by then fails the trial
SYSCALLS = ("fsync", "replace", "rename", "unlink", "remove", "truncate", "ftruncate")
PHASES = ("add", "merge", "rebuild")
KINDS = ("time", "syscall")
# ckpt modes: how often a merge writes a generation file (maintenance.CHECKPOINT_MIN_ROWS / _FRACTION)
CKPT_MODES = {"always": (0, 0.0), "small": (300, 0.05), "default": (None, None)}

WORKLOAD = r'''
import numpy as np

def batch_vectors(seed, r, n, dim):
    rng = np.random.default_rng([seed, r, 7])
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
'''

CHILD = WORKLOAD + r'''
import json, os, signal, sys, time

cfg = json.loads(sys.argv[2])
PHASE = ["open"]
COUNTS = {}
TARGET = cfg.get("target")

def _wrap(name):
    real = getattr(os, name)
    def wrapper(*args, **kwargs):
        key = PHASE[0] + ":" + name
        COUNTS[key] = COUNTS.get(key, 0) + 1
        if TARGET and PHASE[0] == TARGET["phase"] and name == TARGET["fn"] and COUNTS[key] == TARGET["n"]:
            print(f"KILL {key} {COUNTS[key]} {args[0] if args else ''}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(os, name, wrapper)

for _name in cfg["syscalls"]:
    if hasattr(os, _name):
        _wrap(_name)

from img_agent.config import Settings
from img_agent.index import maintenance
from img_agent.index.engine import Engine

min_rows, fraction = cfg["ckpt"]
if min_rows is not None:
    maintenance.CHECKPOINT_MIN_ROWS = min_rows
    maintenance.CHECKPOINT_FRACTION = fraction

class Stub:
    name, pretrained, dim, image_size = "stub", "none", cfg["dim"], 32

def say(line):
    print(line, flush=True)

seed, dim = cfg["seed"], cfg["dim"]
rng = np.random.default_rng([seed, 1])
DUR = {}

def timed(op, fn):
    t = time.perf_counter()
    out = fn()
    DUR.setdefault(op, []).append(time.perf_counter() - t)
    return out

eng = Engine.open(Settings(data_dir=sys.argv[1], model="stub", index_string=cfg["index_string"],
                           merge_threshold=10**9), encoder=Stub())
path_id = {}  # live path -> id, as acknowledged
for r in range(cfg["rounds"]):
    n = int(rng.integers(1, cfg["batch_max"] + 1)) if rng.random() < 0.9 else int(rng.integers(1, 4))
    paths = [f"/v/{r}/{i}.jpg" for i in range(n)]
    reuse = []
    if path_id and rng.random() < 0.5:
        k = min(n, int(rng.integers(1, 6)), len(path_id))
        olds = [str(p) for p in rng.choice(sorted(path_id), size=k, replace=False)]
        slots = [int(s) for s in rng.choice(n, size=k, replace=False)]
        for s, p in zip(slots, olds):
            paths[s] = p
            reuse.append(f"{s}:{p}")
    say(f"B add {r} {n} {';'.join(reuse) or '-'}")
    PHASE[0] = "add"
    ids = timed("add", lambda: eng.add_vectors(batch_vectors(seed, r, n, dim), paths))
    PHASE[0] = "idle"
    say(f"ACK {r} {ids[0]} {n}")
    for i, p in zip(ids, paths):
        path_id[p] = i
    if r % 3 == 2:
        live = sorted(path_id.values())
        k = min(len(live), int(rng.integers(1, 40)))
        gone = sorted(int(i) for i in rng.choice(live, size=k, replace=False))
        say(f"B rm {r} {','.join(map(str, gone))}")
        PHASE[0] = "add"
        timed("rm", lambda: eng.remove(ids=gone))
        PHASE[0] = "idle"
        say(f"RM {r}")
        gone_set = set(gone)
        path_id = {p: i for p, i in path_id.items() if i not in gone_set}
    if r % 2 == 1:
        say(f"B merge {r}")
        PHASE[0] = "merge"
        timed("merge", eng.merge)
        PHASE[0] = "idle"
        say(f"E merge {r}")
        if r % 4 == 3:
            say(f"B ckpt {r}")
            PHASE[0] = "merge"
            timed("ckpt", eng.checkpoint)
            PHASE[0] = "idle"
            say(f"E ckpt {r}")
    if r % 5 == 4:
        say(f"B rebuild {r}")
        PHASE[0] = "rebuild"
        timed("rebuild", eng.rebuild)
        PHASE[0] = "idle"
        say(f"E rebuild {r}")
say("COUNTS " + json.dumps(COUNTS))
say("DUR " + json.dumps({k: float(np.median(v)) for k, v in DUR.items()}))
say("DONE")
os._exit(0)  # no close(): the parent reopens a store that was never closed cleanly
'''

_ns: dict = {}
exec(WORKLOAD, _ns)  # noqa: S102 - the same vector generator as the child's
batch_vectors = _ns["batch_vectors"]



def _settings(data: Path) -> Settings:
    return Settings(data_dir=data, model="stub", index_string=INDEX_STRING, merge_threshold=10**9)


# -- running a child ------------------------------------------------------------------------------
@dataclass
class Run:
    lines: list[str]
    returncode: int | None
    stderr: str
    killed_by_parent: bool
    timed_out: bool


def run_child(data: Path, cfg: dict, trigger: tuple[str, int, float] | None, log_dir: Path) -> Run:
    """Run the child on ``data``. With ``trigger`` = (line prefix, occurrence, delay), SIGKILL it
    ``delay`` s after the ``occurrence``-th line starting with the prefix; otherwise let it run until
    it kills itself (syscall point) or ends. The child never outlives this call."""
    err_path = log_dir / "child.stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    q: queue.Queue = queue.Queue()
    killed = timed_out = False
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), json.dumps(cfg)], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)

        def pump() -> None:
            for line in proc.stdout:
                if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                    q.put(line.rstrip("\n"))
            q.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        deadline = time.monotonic() + CHILD_DEADLINE_S
        seen = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                try:
                    line = q.get(timeout=left)
                except queue.Empty:
                    timed_out = True
                    break
                if line is None:
                    break
                lines.append(line)
                if trigger and line.startswith(trigger[0]):
                    seen += 1
                    if seen == trigger[1]:
                        if trigger[2] > 0:
                            time.sleep(trigger[2])
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                        break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            reader.join(timeout=30)
            proc.stdout.close()
        # lines printed before the kill but not read yet were acknowledged all the same
        while True:
            try:
                line = q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                lines.append(line)
    return Run(lines, proc.returncode, err_path.read_text()[-3000:], killed, timed_out)


_CALIBRATION: dict[str, dict] = {}


def calibration(mode: str, tmp_root: Path) -> dict:
    """Syscall counts per phase and median operation times of the workload, run unkilled once per session."""
    if mode not in _CALIBRATION:
        folder = tmp_root / f"calibrate-{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = child_config(CALIBRATION_SEED, CKPT_MODES[mode], None, CALIBRATION_ROUNDS)
        run = run_child(folder / "data", cfg, None, folder)
        assert run.returncode == 0 and run.lines and run.lines[-1] == "DONE", (
            f"calibration child failed (rc {run.returncode}): {run.stderr}")
        counts = json.loads(next(x for x in run.lines if x.startswith("COUNTS "))[7:])
        durations = json.loads(next(x for x in run.lines if x.startswith("DUR "))[4:])
        _CALIBRATION[mode] = {"counts": counts, "durations": durations}
        shutil.rmtree(folder, ignore_errors=True)
    return _CALIBRATION[mode]


def child_config(seed: int, ckpt: tuple, target: dict | None, rounds: int) -> dict:
    return {"seed": seed, "dim": DIM, "batch_max": BATCH_MAX, "index_string": INDEX_STRING, "ckpt": list(ckpt),
            "target": target, "rounds": rounds, "syscalls": list(SYSCALLS)}


# -- the trial ------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Where a trial kills its child."""

    seed: int
    phase: str
    kind: str
    ckpt_mode: str
    trigger: tuple[str, int, float] | None = None
    target: dict | None = None
    fraction: str = ""  # for a time kill: the delay as a fraction of the operation's median time

    def describe(self) -> str:
        where = (f"{self.trigger[2] * 1000:.1f} ms{self.fraction} after line #{self.trigger[1]} starting "
                 f"{self.trigger[0]!r}"
                 if self.trigger else
                 f"just before call #{self.target['n']} of os.{self.target['fn']} in phase {self.target['phase']}")
        return f"seed {self.seed}, phase {self.phase}, kind {self.kind}, checkpoints {self.ckpt_mode}: kill {where}"

    def replay(self) -> str:
        return (f"IMG_AGENT_FAULT_SEED={self.seed} IMG_AGENT_FAULT_TRIALS=1 python -m pytest "
                f"tests/faults/test_faults_sigkill.py -k '{self.phase}-{self.kind}'")


TIME_TRIGGERS = {
    # phase: [(line prefix, max occurrence, operation whose median time bounds the delay)]
    "add": [("B add", 12, "add"), ("ACK", 12, "add"), ("B rm", 4, "rm"), ("RM", 4, "add")],
    "merge": [("B merge", 7, "merge"), ("B ckpt", 3, "ckpt"), ("E merge", 7, "ckpt")],
    "rebuild": [("B rebuild", 3, "rebuild"), ("E rebuild", 2, "add")],
}


def make_plan(seed: int, phase: str, kind: str, tmp_root: Path) -> Plan:
    rng = np.random.default_rng([seed, PHASES.index(phase), KINDS.index(kind)])
    mode = str(rng.choice(sorted(CKPT_MODES)))
    cal = calibration(mode, tmp_root)
    plan = Plan(seed, phase, kind, mode)
    if kind == "time":
        prefix, most, op = TIME_TRIGGERS[phase][int(rng.integers(len(TIME_TRIGGERS[phase])))]
        typical = max(cal["durations"].get(op, 0.005), 0.001)
        u = 0.0 if rng.random() < 0.2 else float(rng.uniform(0, 1.5))
        plan.trigger = (prefix, int(rng.integers(1, most + 1)), u * typical)
        plan.fraction = f" ({u:.2f} x the median {op} time)"
    else:
        # the add phase includes the store's creation at open (the vector header is written then)
        phases = ("open", "add") if phase == "add" else (phase,)
        calls = {key: c for key, c in cal["counts"].items() if key.split(":")[0] in phases}
        assert calls, f"the workload makes none of {SYSCALLS} in phase {phase} (calibration {cal['counts']})"
        keys = sorted(calls)
        weights = np.array([calls[k] for k in keys], dtype=float)
        key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
        in_phase, fn = key.split(":")
        plan.target = {"phase": in_phase, "fn": fn, "n": int(rng.integers(1, calls[key] + 1))}
    return plan


@dataclass
class Model:
    """What the parent knows the child acknowledged, replayed from its output."""

    seed: int
    expected: dict[int, tuple[str, int, int, int]] = field(default_factory=dict)  # id -> (path, round, row, rows)
    path_id: dict[str, int] = field(default_factory=dict)  # live path -> id
    dead: set[int] = field(default_factory=set)  # acknowledged removed or replaced
    next_id: int = 0
    in_flight: tuple | None = None  # the operation begun and not acknowledged
    kill_line: str | None = None
    done: bool = False

    @staticmethod
    def batch_paths(r: int, n: int, reuse: str) -> list[str]:
        paths = [f"/v/{r}/{i}.jpg" for i in range(n)]
        if reuse != "-":
            for item in reuse.split(";"):
                slot, path = item.split(":", 1)
                paths[int(slot)] = path
        return paths

    def feed(self, line: str) -> None:
        word, *rest = line.split(" ")
        if word == "B" and rest[0] == "add":
            r, n = int(rest[1]), int(rest[2])
            self.in_flight = ("add", r, self.batch_paths(r, n, rest[3]))
        elif word == "ACK":
            r, first, n = map(int, rest)
            op = self.in_flight
            assert op and op[0] == "add" and op[1] == r and len(op[2]) == n, f"ACK {rest} without its B add"
            assert first == self.next_id, f"add of round {r} got ids from {first}, expected {self.next_id}"
            for row, path in enumerate(op[2]):
                if path in self.path_id:
                    self.dead.add(self.path_id[path])
                self.path_id[path] = first + row
                self.expected[first + row] = (path, r, row, n)
            self.next_id = first + n
            self.in_flight = None
        elif word == "B" and rest[0] == "rm":
            self.in_flight = ("rm", int(rest[1]), [int(i) for i in rest[2].split(",")])
        elif word == "RM":
            op = self.in_flight
            assert op and op[0] == "rm", "RM without its B rm"
            gone = set(op[2])
            self.dead |= gone
            self.path_id = {p: i for p, i in self.path_id.items() if i not in gone}
            self.in_flight = None
        elif word == "B":
            self.in_flight = (rest[0], int(rest[1]))
        elif word == "E":
            self.in_flight = None
        elif word == "KILL":
            self.kill_line = line
        elif word == "DONE":
            self.done = True

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors the child added for ``ids`` (acknowledged or in flight)."""
        out = np.empty((len(ids), DIM), np.float32)
        cache: dict[tuple[int, int], np.ndarray] = {}
        for j, i in enumerate(ids.tolist()):
            _, r, row, n = self.expected[i]
            if (r, n) not in cache:
                cache[(r, n)] = batch_vectors(self.seed, r, n, DIM)
            out[j] = cache[(r, n)][row]
        return out


def check_files(data: Path, generation: int, when: str) -> None:
    stray = sorted(str(p.relative_to(data)) for p in data.rglob("*.tmp"))
    assert not stray, f"{when}: temporary files left: {stray}"
    files = sorted(p.name for p in (data / "index").iterdir())
    want = [f"gen-{generation:06d}.faiss"] if generation else []
    assert files == want, f"{when}: index/ holds {files}, expected only {want} (generation {generation})"


def check_store(eng: Engine, model: Model, certain_live: set[int], uncertain: set[int], when: str,
                sample: int | None = None) -> set[int]:
    """The invariants on an open store; returns the live ids.

    Searches use the vector of every id the child added, or with ``sample`` that of every id not live
    and of ``sample`` live ones (the later, repeated checks of a trial).
    """
    next_id = eng.catalog.next_id()
    records = eng.catalog.records(range(next_id))
    live = set(records)
    lost = sorted(certain_live - live)
    assert not lost, (f"{when}: {len(lost)} acknowledged ids are lost (not live): {lost[:20]} "
                      f"(rounds {sorted({model.expected[i][1] for i in lost})[:10]})")
    back = sorted((model.dead - uncertain) & live)
    assert not back, f"{when}: acknowledged-removed or replaced ids are live again: {back[:20]}"
    unknown = sorted(live - set(model.expected))
    assert not unknown, f"{when}: live ids the child never added: {unknown[:20]}"
    moved = [(i, records[i].path, model.expected[i][0]) for i in sorted(live) if records[i].path != model.expected[i][0]]
    moved += [(r.id, r.path, model.expected[r.id][0]) for r in eng.get(sorted(certain_live))
              if r.path != model.expected[r.id][0]]
    assert not moved, f"{when}: ids changed meaning (id, path now, path added): {moved[:10]}"
    st = eng.status()
    assert st.live == len(live) == st.main + st.buffer, f"{when}: status {st.live}={st.main}+{st.buffer}, catalog {len(live)}"
    known = np.array(sorted(model.expected), dtype=np.int64)
    if not len(known):
        return live
    want = model.vectors(known)
    live_ids = np.array(sorted(live), dtype=np.int64)
    if len(live_ids):
        stored = eng.store.get(live_ids)
        bad = live_ids[~np.all(np.abs(stored - want[np.searchsorted(known, live_ids)]) < 1e-5, axis=1)]
        assert not len(bad), f"{when}: stored vectors differ from the added ones for ids {bad[:20].tolist()}"
    if sample is not None and len(live_ids) > sample:
        rng = np.random.default_rng(len(live_ids))
        keep = np.isin(known, live_ids, invert=True) | np.isin(known, rng.choice(live_ids, sample, replace=False))
        known, want = known[keep], want[keep]
    ranked = eng.search_ids(want, k=3)
    not_found, ghosts = [], set()
    for i, (ids, scores) in zip(known.tolist(), ranked):
        ghosts.update(int(x) for x in ids if int(x) not in live)
        if i in live and (not len(ids) or ids[0] != i):
            tie = i in ids.tolist() and scores[ids.tolist().index(i)] == scores[0]
            if not tie:
                not_found.append((i, ids.tolist(), [round(float(s), 4) for s in scores]))
    assert not ghosts, f"{when}: searches returned ids that are not live (removed, replaced or unknown): {sorted(ghosts)[:20]}"
    assert not not_found, f"{when}: live ids not found first by their own vector (id, hits, scores): {not_found[:10]}"
    return live


def run_trial(plan: Plan, folder: Path) -> None:
    data = folder / "data"
    cfg = child_config(plan.seed, CKPT_MODES[plan.ckpt_mode], plan.target, ROUND_CAP)
    run = run_child(data, cfg, plan.trigger, folder)
    model = Model(plan.seed)
    for line in run.lines:
        model.feed(line)
    assert not run.timed_out, f"the child hung (no kill point within {CHILD_DEADLINE_S:.0f} s); stderr: {run.stderr}"
    assert not model.done, f"the child ended before the kill point was reached; stderr: {run.stderr}"
    if plan.target:
        assert model.kill_line, f"the child died without reaching the syscall kill point (rc {run.returncode}): {run.stderr}"
    assert run.returncode == -signal.SIGKILL, f"child exit code {run.returncode}, not SIGKILL: {run.stderr}"

    # what the one operation in flight may or may not have done
    uncertain: set[int] = set()
    op = model.in_flight
    if op and op[0] == "add":
        _, r, paths = op
        uncertain |= {model.path_id[p] for p in paths if p in model.path_id}
        for row, path in enumerate(paths):  # its ids, if it committed without acknowledging
            model.expected[model.next_id + row] = (path, r, row, len(paths))
    elif op and op[0] == "rm":
        uncertain |= set(op[2])
    certain_live = set(model.expected) - model.dead - uncertain
    if op and op[0] == "add":
        certain_live -= set(range(model.next_id, model.next_id + len(op[2])))

    with Engine.open(_settings(data), encoder=StubEncoder(DIM)) as eng:
        if VERBOSE:
            st = eng.status()
            print(f"\n{plan.describe()}: {len(model.expected)} ids acked or in flight, {len(model.dead)} dead, "
                  f"in flight {op[:2] if op else None}, {model.kill_line or ''} -> live {st.live}, "
                  f"generation {st.generation}, unsaved {st.unsaved}, {st.index}")
        live = check_store(eng, model, certain_live, uncertain, "after reopen")
        if op and op[0] == "add":
            batch = set(range(model.next_id, model.next_id + len(op[2])))
            assert not (batch & live) or batch <= live, (
                f"the add in flight is partly there: {len(batch & live)} of {len(batch)} ids")
            if batch & live:
                assert not (uncertain & live), "the add in flight committed but the ids it replaces are still live"
        check_files(data, eng.status().generation, "after reopen")
        # the store keeps working
        extra_round = 10_000
        extra = batch_vectors(plan.seed, extra_round, 200, DIM)
        ids = eng.add_vectors(extra, [f"/after/{i}.jpg" for i in range(200)])
        for row, i in enumerate(ids):
            model.expected[i] = (f"/after/{row}.jpg", extra_round, row, 200)
        ranked = eng.search_ids(extra, k=1)
        assert [int(r[0][0]) for r in ranked] == ids, "a new add after the crash is not searchable"
        live = live | set(ids)
        eng.merge()
        check_files(data, eng.status().generation, "after reopen + merge")
        eng.rebuild()
        check_files(data, eng.status().generation, "after reopen + merge + rebuild")
        check_store(eng, model, live, set(), "after merge + rebuild", sample=300)
    # the same content again after a clean close
    with Engine.open(_settings(data), encoder=StubEncoder(DIM)) as eng:
        check_store(eng, model, live, set(), "after a second reopen", sample=300)
        generation = eng.status().generation
    check_files(data, generation, "after a second reopen")


@pytest.mark.timeout(120 + 20 * TRIALS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_at_random_points_keeps_every_acknowledged_change(tmp_path, harness, phase, kind):
    failures = []
    for t in range(TRIALS):
        seed = BASE_SEED + t
        folder = tmp_path / f"trial-{t}"
        folder.mkdir()
        plan = make_plan(seed, phase, kind, tmp_path)
        try:
            with harness.trial("sigkill", faults=1):
                run_trial(plan, folder)
        except Exception as exc:  # noqa: BLE001 - every failing trial is reported, with its replay command
            message = str(exc).split("\nassert ")[0]  # pytest appends the rewritten assert: noise here
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            failures.append(f"{plan.describe()}\n    {type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}: "
                            f"{message}\n    replay: {plan.replay()}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    assert not failures, f"{len(failures)} of {TRIALS} SIGKILL trials failed:\n" + "\n".join(failures)
