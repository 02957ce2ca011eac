"""Store faults as a user meets them: the CLI as a subprocess (through the store's service), tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_cli import run

from img_agent.testing.mounts import remount_read_only, tmpfs


def cli(*args: str, data: Path, check: bool = False) -> subprocess.CompletedProcess:
    return run("--model", "tiny-test", *args, data_dir=data, check=check)


def assert_clear(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture
def store(tmp_path, image_dir):
    data = tmp_path / "store"
    cli("index", str(image_dir), data=data, check=True)
    yield data
    run("service", "stop", data_dir=data, check=False)


def test_missing_catalog_status_refuses_then_doctor_and_repair(store, harness):
    with harness.trial("store", faults=1):
        run("service", "stop", data_dir=store, check=True)
        for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
            (store / name).unlink(missing_ok=True)
        size = (store / "vectors.f32").stat().st_size
        assert_clear(run("status", data_dir=store, check=False), "img-agent repair")
        assert (store / "vectors.f32").stat().st_size == size
        doctor = run("doctor", data_dir=store, check=False)
        assert doctor.returncode == 1 and "missing or empty" in doctor.stdout and "Traceback" not in doctor.stderr
        assert (store / "vectors.f32").stat().st_size == size
        fixed = run("repair", "--json", data_dir=store, check=True)
        moved = json.loads(fixed.stdout)["lost_and_found"]
        assert (Path(moved) / "vectors.f32").stat().st_size == size
        assert run("doctor", data_dir=store, check=False).returncode == 0


def test_backup_through_the_service_holds_every_image(store, harness, tmp_path):
    with harness.trial("store", faults=1):
        before = json.loads(run("status", "--json", data_dir=store, check=True).stdout)
        out = json.loads(run("backup", str(tmp_path / "copy"), "--json", data_dir=store, check=True).stdout)
        assert out["images"] == before["live"]
        copy = tmp_path / "copy"
        assert run("doctor", data_dir=copy, check=False).returncode == 0
        after = json.loads(run("status", "--json", "--no-service", data_dir=copy, check=True).stdout)
        assert after["live"] == before["live"]
        hits = json.loads(run("search", "--similar", "0", "-k", "50", "--json", "--no-service", data_dir=copy,
                              check=True).stdout)
        assert len(hits) == before["live"] - 1


def test_remove_an_id_beyond_int64(store, harness):
    with harness.trial("store", faults=1):
        proc = run("remove", str(2**70), data_dir=store, check=False)
        assert_clear(proc, f"No live image matched {2**70}")


def test_read_only_store_searches(store, harness, tmp_path):
    with harness.trial("store", faults=1), tmpfs(tmp_path / "ro", "32m") as mnt:
        run("service", "stop", data_dir=store, check=True)
        data = mnt / "store"
        try:
            subprocess.run(["cp", "-a", str(store), str(data)], check=True)
            remount_read_only(mnt)
            st = json.loads(run("status", "--json", "--no-service", data_dir=data, check=True).stdout)
            assert st["read_only"] and st["live"] == 12
            hits = json.loads(run("search", "a red square", "--json", "--no-service", data_dir=data, check=True).stdout)
            assert hits
            assert_clear(run("remove", "1", "--no-service", data_dir=data, check=False), "read-only")
            assert run("doctor", data_dir=data, check=False).returncode == 0
            # the same through the store's service (its log goes beside its socket)
            st = json.loads(run("status", "--json", data_dir=data, check=True).stdout)
            assert st["read_only"] and st["live"] == 12
            assert json.loads(run("search", "a red square", "--json", data_dir=data, check=True).stdout) == hits
            assert_clear(run("remove", "1", data_dir=data, check=False), "read-only")
        finally:
            run("service", "stop", data_dir=data, check=False)


def test_disk_full_during_index_is_clear_and_keeps_the_store(tmp_path, image_dir, harness):
    """`index` on a full disk: one clear error (no traceback), and what was indexed before stays searchable."""
    from img_agent.testing import make_images

    with harness.trial("store", faults=1), tmpfs(tmp_path / "small", "8m") as mnt:
        data = mnt / "store"
        try:
            cli("index", str(image_dir), data=data, check=True)
            more = make_images(tmp_path / "more", 60, seed=9)
            stat = os.statvfs(mnt)
            filler = mnt / "filler"
            filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 48 * 1024))
            proc = cli("index", str(more[0].parent), data=data, check=False)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "Traceback" not in proc.stderr and "disk is full" in proc.stderr, proc.stderr
            assert "kept" in proc.stderr, proc.stderr
            filler.unlink()
            status = json.loads(run("status", "--json", data_dir=data, check=True).stdout)
            assert status["live"] >= 12
            hits = json.loads(run("search", "--similar", "0", "-k", "50", "--json", data_dir=data, check=True).stdout)
            assert len(hits) == status["live"] - 1
        finally:
            run("service", "stop", data_dir=data, check=False)
