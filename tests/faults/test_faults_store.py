"""Store faults, engine level: missing or damaged files, full and read-only disks, hostile links, odd ids.

Each trial checks that nothing acknowledged is lost, that every live id still finds itself (its
own stored vector's top hit), and that every failure is a clear error of the img_agent.errors tree
whose message says what to do.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import (
    InvalidInputError,
    NotFoundError,
    StoreCorruptError,
    StoreError,
    StoreReadOnlyError,
    StoreWriteError,
)
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder
from img_agent.testing.mounts import remount_read_only, tmpfs

DIM = 32



def diagnose(data):
    from img_agent.index.doctor import diagnose

    return diagnose(data)


def repair(data):
    from img_agent.index.repair import repair

    return repair(data)


def vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_eng(data, **kw) -> Engine:
    return Engine.open(Settings(data_dir=data, model="stub", merge_threshold=10**9, **kw), encoder=StubEncoder(DIM))


def build(data, batches: int = 3, n: int = 200, merge: bool = True) -> list[int]:
    """A store with ``batches`` acknowledged adds (merged into a main index); the acknowledged ids."""
    acked: list[int] = []
    with open_eng(data) as eng:
        for b in range(batches):
            acked += eng.add_vectors(vectors(n, b), [f"/img/{b}/{i}.jpg" for i in range(n)])
            if merge and b == 0:
                eng.merge()
    return acked


def assert_sound(eng: Engine, acked: list[int]) -> None:
    """Every acknowledged id is live and is the top hit of its own stored vector."""
    assert eng.live_count == len(acked)
    ids = np.asarray(acked)
    ranked = eng.search_ids(eng.store.get(ids), 1)
    assert [int(r[0][0]) for r in ranked] == acked


def assert_clear(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, text


def sizes(data) -> dict[str, int]:
    return {str(p.relative_to(data)): p.stat().st_size for p in data.rglob("*") if p.is_file()}


# -- 1: a missing or empty catalog never costs the vectors --------------------------------------
@pytest.mark.parametrize("how", ["missing", "zero-bytes"])
def test_missing_catalog_refuses_and_repair_sets_files_aside(tmp_path, harness, how):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        build(data)
        for suffix in ("-wal", "-shm"):
            (data / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
        if how == "missing":
            (data / "catalog.sqlite").unlink()
        else:
            (data / "catalog.sqlite").write_bytes(b"")
        before = sizes(data)
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "Nothing was changed", "img-agent repair", "img-agent doctor")
        assert {k: v for k, v in sizes(data).items() if k != "lock"} == {k: v for k, v in before.items() if k != "lock"}
        report = diagnose(data)
        assert not report.ok and any("missing or empty" in f.what for f in report.findings)
        assert sizes(data) == {**before, "lock": sizes(data).get("lock", 0)}  # doctor changes nothing
        fixed = repair(data)
        assert fixed.lost_and_found and not fixed.remaining
        kept = sizes(data / "lost+found")
        assert any(k.endswith("vectors.f32") and v == before["vectors.f32"] for k, v in kept.items())
        assert any("gen-" in k for k in kept)
        with open_eng(data) as eng:
            assert eng.live_count == 0


def test_vectors_past_the_catalog_bound_are_refused_not_cut(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data, batches=1)
        shutil.copy(data / "catalog.sqlite", tmp_path / "old.sqlite")  # a catalog restored from an older moment
        with open_eng(data) as eng:
            eng.add_vectors(vectors(300, 7), [f"/late/{i}.jpg" for i in range(300)])
        (data / "catalog.sqlite").unlink()
        shutil.copy(tmp_path / "old.sqlite", data / "catalog.sqlite")
        size = (data / "vectors.f32").stat().st_size
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "Nothing was changed", "img-agent repair")
        assert (data / "vectors.f32").stat().st_size == size
        fixed = repair(data)
        assert any("vectors-past-catalog" in a for a in fixed.actions)
        with open_eng(data) as eng:
            assert_sound(eng, acked)


# -- 2: checksums ---------------------------------------------------------------------------------
def _flip(path, offset: int, n: int = 64) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        raw = bytearray(fh.read(n))
        fh.seek(offset)
        fh.write(bytes(b ^ 0x5A for b in raw))


def test_corrupted_generation_is_detected_and_rebuilt(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        gen = next((data / "index").glob("gen-*.faiss"))
        _flip(gen, gen.stat().st_size // 2)
        with open_eng(data) as eng:
            st = eng.status()
            assert any("checksum" in h and "rebuilt" in h for h in st.hints)
            assert st.main == len(acked) and st.buffer == 0
            assert_sound(eng, acked)


def test_corrupted_vector_segment_refuses_and_repair_lists_files(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        _flip(data / "vectors.f32", (data / "vectors.f32").stat().st_size // 2)
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "img-agent doctor", "img-agent repair", "checksum")
        assert not diagnose(data).ok
        fixed = repair(data)
        assert fixed.removed_ids and len(fixed.reindex) == len(fixed.removed_ids) and not fixed.remaining
        assert all(p.startswith("/img/") for p in fixed.reindex)
        with open_eng(data) as eng:
            assert_sound(eng, [i for i in acked if i not in set(fixed.removed_ids)])


# -- 3: a catalog SQLite cannot read --------------------------------------------------------------
def test_damaged_catalog_gives_a_clear_error(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        build(data, batches=4)
        path = data / "catalog.sqlite"
        _flip(path, 4096 * 2, 4096)  # a page of the images table
        with pytest.raises(StoreError) as err, open_eng(data) as eng:
            eng.status()
        assert_clear(err.value, "img-agent doctor")
        assert not isinstance(err.value, sqlite3.Error)


def test_catalog_and_wal_from_different_moments(tmp_path, harness):
    with harness.trial("store", faults=1):
        data, copy = tmp_path / "data", tmp_path / "copy"
        copy.mkdir()
        eng = open_eng(data)
        try:
            for b in range(3):
                eng.add_vectors(vectors(300, b), [f"/a{b}/{i}.jpg" for i in range(300)])
            shutil.copy(data / "catalog.sqlite-wal", copy / "catalog.sqlite-wal")  # the -wal first...
            for b in range(3, 8):
                eng.add_vectors(vectors(300, b), [f"/b{b}/{i}.jpg" for i in range(300)])
                eng.remove(ids=list(range(b * 10, b * 10 + 5)))
            eng.catalog._query("PRAGMA wal_checkpoint(TRUNCATE)")
            for name in ("catalog.sqlite", "vectors.f32", "vectors.json"):  # ...the rest later
                shutil.copy(data / name, copy / name)
        finally:
            eng.close()
        try:
            with open_eng(copy) as other:
                other.status()
        except StoreError as exc:
            assert not isinstance(exc, sqlite3.Error)
            assert_clear(exc, "img-agent")
        fixed = repair(copy)
        assert not fixed.remaining
        with open_eng(copy) as other:
            live = np.flatnonzero(other._state.view.live).tolist()
            assert live
            assert_sound(other, live)


# -- 3: backup ------------------------------------------------------------------------------------
def test_backup_holds_every_acknowledged_image_even_during_adds(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        with open_eng(data) as eng:
            stop = threading.Event()
            added: list[list[int]] = []

            def adder() -> None:
                b = 10
                while not stop.is_set():
                    added.append(eng.add_vectors(vectors(50, b), [f"/c/{b}/{i}.jpg" for i in range(50)]))
                    b += 1

            t = threading.Thread(target=adder)
            t.start()
            try:
                reports = [eng.backup(tmp_path / f"backup{i}") for i in range(3)]
            finally:
                stop.set()
                t.join()
            with pytest.raises(InvalidInputError):
                eng.backup(tmp_path / "backup0")
        for report in reports:
            with open_eng(tmp_path / report.dest) as copy:
                assert copy.live_count == report.images >= len(acked)
                ids = np.flatnonzero(copy._state.view.live).tolist()
                assert set(acked) <= set(ids)
                assert_sound(copy, ids)
            assert diagnose(tmp_path / report.dest).ok


# -- 4: disk full ---------------------------------------------------------------------------------
def test_disk_full_is_a_clear_error_and_keeps_what_was_committed(tmp_path, harness):
    with harness.trial("store", faults=1), tmpfs(tmp_path / "small", "2m") as mnt:
        data = mnt / "data"
        acked: list[int] = []
        eng = open_eng(data)
        with pytest.raises(StoreWriteError) as err:
            for b in range(10_000):
                acked += eng.add_vectors(vectors(100, b), [f"/d/{b}/{i}.jpg" for i in range(100)])
        assert_clear(err.value, "disk is full", "committed before is kept", "Free some space")
        eng.close()
        with open_eng(data) as again:
            assert_sound(again, acked)


# -- 5: read-only ---------------------------------------------------------------------------------
def test_read_only_store_searches_and_refuses_changes(tmp_path, harness):
    with harness.trial("store", faults=1), tmpfs(tmp_path / "ro", "16m") as mnt:
        data = mnt / "data"
        acked = build(data)
        remount_read_only(mnt)
        before = sizes(data)
        with open_eng(data) as eng:
            st = eng.status()
            assert st.read_only and any("read-only" in h for h in st.hints)
            assert_sound(eng, acked)
            for change in (lambda: eng.add_vectors(vectors(1, 99), ["/x.jpg"]), lambda: eng.remove(ids=[1]),
                           eng.merge, eng.rebuild):
                with pytest.raises(StoreReadOnlyError) as err:
                    change()
                assert_clear(err.value, "read-only", "img-agent backup")
        assert sizes(data) == before
        assert diagnose(data).ok


def test_read_only_store_with_wal_opens(tmp_path, harness):
    with harness.trial("store", faults=1), tmpfs(tmp_path / "ro", "16m") as mnt:
        data = mnt / "data"
        child = ("import os, sys; sys.path.insert(0, sys.argv[2]); from test_faults_store import *; "
                 "eng = open_eng(sys.argv[1]); print(eng.add_vectors(vectors(100, 3), "
                 "[f'/w/{i}.jpg' for i in range(100)])[-1], flush=True); os._exit(0)")
        out = subprocess.run([sys.executable, "-c", child, str(data), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True)
        acked = list(range(int(out.stdout.split()[-1]) + 1))
        assert (data / "catalog.sqlite-wal").exists()  # the process died: its -wal stays behind
        remount_read_only(mnt)
        with open_eng(data) as ro:
            assert ro.read_only
            assert ro.live_count in (0, len(acked))  # immutable reading may not see the -wal, and says so
            if ro.live_count:
                assert_sound(ro, acked)
            else:
                assert any("catalog.sqlite-wal" in h for h in ro.status().hints)


# -- 6: odd lock paths and meta values --------------------------------------------------------------
@pytest.mark.parametrize("key", ["format_version", "main_generation", "dim", "vector_rows_intent"])
def test_non_integer_meta_is_a_clear_error_and_repairable(tmp_path, harness, key):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        db = sqlite3.connect(data / "catalog.sqlite")
        db.execute("UPDATE meta SET value='abc' WHERE key=?", (key,))
        db.commit()
        db.close()
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, key, "'abc'", "img-agent repair")
        assert not diagnose(data).ok
        assert not repair(data).remaining
        with open_eng(data) as eng:
            assert_sound(eng, acked)


def test_lock_path_that_is_a_folder(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        (data / "lock").unlink()
        (data / "lock").mkdir()
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "not a plain file", "img-agent repair")
        repair(data)
        with open_eng(data) as eng:
            assert_sound(eng, acked)


# -- 7: non-finite vectors ----------------------------------------------------------------------
def test_nan_vector_on_disk_is_refused_and_repair_removes_it(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        with open(data / "vectors.f32", "r+b") as fh:  # a store written before checksums, with a NaN row
            fh.seek(250 * DIM * 4)
            fh.write(np.full(DIM, np.nan, dtype="<f4").tobytes())
        db = sqlite3.connect(data / "catalog.sqlite")
        db.execute("DELETE FROM vector_segments")
        db.commit()
        db.close()
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "NaN", "img-agent repair")
        fixed = repair(data)
        assert fixed.removed_ids == [250] and fixed.reindex == ["/img/1/50.jpg"]
        with open_eng(data) as eng:
            assert_sound(eng, [i for i in acked if i != 250])


def test_nan_vectors_are_refused_at_add(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data, batches=1)
        bad = vectors(3, 5)
        bad[1, 4] = np.inf
        with open_eng(data) as eng:
            with pytest.raises(InvalidInputError) as err:
                eng.add_vectors(bad, ["/n/0.jpg", "/n/1.jpg", "/n/2.jpg"])
            assert_clear(err.value, "NaN or infinite")
            assert_sound(eng, acked)


# -- 8: hostile links and permissions -----------------------------------------------------------
def test_symlinked_lock_never_touches_its_target(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        victim = tmp_path / "precious.txt"
        victim.write_text("do not truncate me\n")
        (data / "lock").unlink()
        (data / "lock").symlink_to(victim)
        with pytest.raises(StoreCorruptError) as err:
            open_eng(data)
        assert_clear(err.value, "symbolic link")
        assert victim.read_text() == "do not truncate me\n"
        repair(data)
        assert victim.read_text() == "do not truncate me\n"
        with open_eng(data) as eng:
            assert_sound(eng, acked)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_folder_writable_by_others_is_refused(tmp_path, harness, mode):
    if mode == 0o775:
        import grp
        import pwd

        user = pwd.getpwuid(os.getuid())
        if grp.getgrgid(os.stat(tmp_path).st_gid).gr_name == user.pw_name:
            pytest.skip("the folder's group is the user's private group (group-writable is safe then)")
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data)
        os.chmod(data, mode)
        with pytest.raises(StoreError) as err:
            open_eng(data)
        assert_clear(err.value, f"chmod go-w {data}")
        os.chmod(data, 0o755)
        with open_eng(data) as eng:
            assert_sound(eng, acked)


# -- 9: ids beyond int64 ------------------------------------------------------------------------
def test_ids_beyond_int64_are_not_found(tmp_path, harness):
    with harness.trial("store", faults=1):
        data = tmp_path / "data"
        acked = build(data, batches=1)
        with open_eng(data) as eng:
            with pytest.raises(NotFoundError) as err:
                eng.remove(ids=[2**70])
            assert_clear(err.value, str(2**70), "No live image matched")
            report = eng.remove(ids=[acked[0], 2**70, -(2**64)])
            assert report.removed == [acked[0]] and report.not_found == [str(2**70), str(-(2**64))]
            with pytest.raises(NotFoundError):
                eng.get([2**70])
            assert_sound(eng, acked[1:])


def test_undecodable_path_is_refused_clearly(tmp_path, harness):
    with harness.trial("input", faults=1):
        with open_eng(tmp_path / "s") as eng:
            eng.add_vectors(vectors(3, 0), ["/v/a.jpg", "/v/b.jpg", "/v/c.jpg"])
            with pytest.raises(InvalidInputError, match="not valid UTF-8"):
                eng.remove(paths=["/v/\udcff.jpg"])
            assert eng.live_count == 3


def test_store_killed_while_created_takes_adds_after_reopen(tmp_path, harness):
    """A crash between writing the vector header and creating the row file leaves a store that still takes adds."""
    with harness.trial("store", faults=1):
        data = tmp_path / "s"
        open_eng(data).close()
        (data / "vectors.f32").unlink()  # what a kill before the row file reached the disk leaves
        with open_eng(data) as eng:
            acked = eng.add_vectors(vectors(5, 1), [f"/v/{i}.jpg" for i in range(5)])
            assert_sound(eng, acked)
