"""Photo metadata through the engine: recorded at index time, HEIC/AVIF indexed, migrated stores backfilled."""

from __future__ import annotations

import calendar
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import features

from img_agent.index import photo_backfill
from img_agent.index.engine import Engine
from img_agent.index.rows import PHOTO_FIELDS
from img_agent.results import PhotoMeta
from img_agent.testing.exif_photos import write_photo

PARIS = {"lat_ref": "N", "lat": ((48, 1), (51, 1), (2964, 100)), "lon_ref": "E", "lon": ((2, 1), (17, 1), (4000, 100))}
RIO = {"lat_ref": "S", "lat": ((22, 1), (54, 1), (0, 1)), "lon_ref": "W", "lon": ((43, 1), (12, 1), (0, 1))}


def _photos(folder: Path) -> dict[str, PhotoMeta]:
    """Write four photos under ``folder``; what each one's record must say, by file name."""
    write_photo(folder / "paris.jpg", 1, make="Canon", model="Canon EOS R5", orientation=6, lens="RF50mm F1.8 STM",
                taken="2023:07:14 18:30:05", offset="+02:00", **PARIS)
    write_photo(folder / "rio.jpg", 2, make="SONY\x00", model=" ILCE-7M4 ", orientation=1,
                taken="2022:12:31 23:59:59", **RIO)
    write_photo(folder / "plain.png", 3, fmt="PNG")
    write_photo(folder / "garbage.jpg", 4, make="FUJIFILM", orientation=42, taken="0000:00:00 00:00:00",
                offset="+77:00", lat_ref="Q", lat=((1, 0), (0, 1), (0, 1)), lon_ref="E", lon=((2, 1), (0, 1), (0, 1)))
    return {
        "paris.jpg": PhotoMeta(
            taken_at=calendar.timegm((2023, 7, 14, 16, 30, 5)), taken_offset="+02:00", camera_make="Canon",
            camera_model="Canon EOS R5", lens="RF50mm F1.8 STM", gps_lat=48 + 51 / 60 + 29.64 / 3600,
            gps_lon=2 + 17 / 60 + 40 / 3600, orientation=6),
        "rio.jpg": PhotoMeta(
            taken_at=calendar.timegm((2022, 12, 31, 23, 59, 59)), camera_make="SONY", camera_model="ILCE-7M4",
            gps_lat=-(22 + 54 / 60), gps_lon=-(43 + 12 / 60), orientation=1),
        "plain.png": PhotoMeta(),
        "garbage.jpg": PhotoMeta(camera_make="FUJIFILM"),
    }


def _meta_of(record) -> PhotoMeta:
    return PhotoMeta(**{name: getattr(record, name) for name in PHOTO_FIELDS})


def _assert_same(actual: PhotoMeta, expected: PhotoMeta) -> None:
    for name in PHOTO_FIELDS:
        want = getattr(expected, name)
        got = getattr(actual, name)
        assert got == (pytest.approx(want, abs=1e-9) if isinstance(want, float) else want), name


def _by_name(engine: Engine, ids) -> dict:
    return {Path(r.path).name: r for r in engine.get(list(ids))}


def test_indexing_records_every_photos_metadata(settings, tmp_path):
    expected = _photos(tmp_path / "photos")
    with Engine.open(settings) as engine:
        report = engine.add_paths([tmp_path / "photos"])
        assert len(report.added) == 4 and not report.skipped  # garbage EXIF does not stop indexing
        records = _by_name(engine, report.added)
        assert set(records) == set(expected)
        for name, want in expected.items():
            _assert_same(_meta_of(records[name]), want)
        assert (records["paris.jpg"].width, records["paris.jpg"].height) == (48, 64)  # turned by orientation 6
    db = sqlite3.connect(settings.data_dir / "catalog.sqlite")
    assert db.execute("SELECT count(*), sum(meta_read) FROM images").fetchone() == (4, 4)


def test_heic_and_avif_are_indexed_and_searchable(settings, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    if not features.check("avif"):
        pytest.skip("this Pillow build has no AVIF codec")
    pillow_heif.register_heif_opener()  # to write the HEIC file
    folder = tmp_path / "phone"
    write_photo(folder / "IMG_0001.HEIC", 5, fmt="HEIF", make="Apple", model="iPhone 15 Pro", **PARIS)
    write_photo(folder / "shot.avif", 6, fmt="AVIF", make="Google", model="Pixel 8", taken="2024:03:03 03:03:03")
    write_photo(folder / "other.jpg", 7)
    with Engine.open(settings) as engine:
        report = engine.add_paths([folder])
        assert len(report.added) == 3 and not report.skipped
        records = _by_name(engine, report.added)
        heic, avif = records["IMG_0001.HEIC"], records["shot.avif"]
        assert heic.format == "HEIF" and heic.camera_model == "iPhone 15 Pro"
        assert heic.gps_lat == pytest.approx(48 + 51 / 60 + 29.64 / 3600)
        assert avif.format == "AVIF" and avif.camera_make == "Google"
        assert avif.taken_at == calendar.timegm((2024, 3, 3, 3, 3, 3)) and avif.taken_offset is None
        for record in (heic, avif):
            hits = engine.search_image(record.path, k=1)
            assert hits[0].id == record.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        q = engine.encode_text(["a phone photo"])[0]
        ids = np.asarray(report.added)
        oracle = ids[np.argsort(-(engine.store.get(ids) @ q), kind="stable")].tolist()
        assert [h.id for h in engine.search_text("a phone photo", k=3)] == oracle


def test_an_oversized_heic_is_skipped_with_the_pixel_limit_reason(settings, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    folder = tmp_path / "phone"
    write_photo(folder / "huge.heic", 8, fmt="HEIF", size=(64, 48))
    write_photo(folder / "small.jpg", 9, size=(32, 24))
    with Engine.open(settings.model_copy(update={"max_image_pixels": 2000})) as engine:
        report = engine.add_paths([folder])
    assert [Path(p).name for p in report.added_paths] == ["small.jpg"]
    [skipped] = report.skipped
    assert Path(skipped.path).name == "huge.heic"
    assert skipped.reason.startswith("image too large: 64x48 (3,072) pixels exceeds the configured limit of 2,000")
    assert "IMG_AGENT_MAX_IMAGE_PIXELS" in skipped.reason


def _forget_metadata(catalog_path: Path) -> None:
    """What a store migrated from format 1 looks like: no photo columns read."""
    db = sqlite3.connect(catalog_path)
    with db:
        db.execute(f"UPDATE images SET meta_read = 0, {', '.join(f'{name} = NULL' for name in PHOTO_FIELDS)}")
    db.close()


def test_a_migrated_store_gets_its_metadata_without_re_encoding(settings, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    expected = _photos(folder)
    moved = folder / "rio.jpg"
    with Engine.open(settings) as engine:
        ids = engine.add_paths([folder]).added
    _forget_metadata(settings.data_dir / "catalog.sqlite")
    moved.touch()  # same content, new mtime: found unchanged by its hash
    vectors = settings.data_dir / "vectors.f32"
    before = hashlib.sha256(vectors.read_bytes()).hexdigest()

    with Engine.open(settings) as engine:
        assert all(_meta_of(r) == PhotoMeta() for r in engine.get(ids))
        monkeypatch.setattr(photo_backfill, "BATCH", 2)  # progress is reported from more than one batch
        calls = []
        report = engine.add_paths([folder], progress=lambda done, total, message: calls.append((done, total, message)))
        assert report.added == [] and report.unchanged == 4 and not report.skipped
        assert [(d, t) for d, t, m in calls if m.startswith("read photo metadata")] == [(2, 4), (4, 4)]
        records = _by_name(engine, ids)
        for name, want in expected.items():
            _assert_same(_meta_of(records[name]), want)
        assert records["rio.jpg"].mtime == moved.stat().st_mtime
    assert hashlib.sha256(vectors.read_bytes()).hexdigest() == before
    db = sqlite3.connect(settings.data_dir / "catalog.sqlite")
    assert db.execute("SELECT count(*) FROM images WHERE meta_read = 0").fetchone()[0] == 0


def test_a_file_unreadable_during_backfill_is_left_for_a_later_add(settings, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    expected = _photos(folder)
    with Engine.open(settings) as engine:
        ids = engine.add_paths([folder]).added
    _forget_metadata(settings.data_dir / "catalog.sqlite")
    from img_agent.embed import photos

    real = photos.read_photo
    monkeypatch.setattr(photos, "read_photo", lambda path, **kw: None if path.endswith("paris.jpg") else real(path, **kw))
    with Engine.open(settings) as engine:
        engine.add_paths([folder])
        assert _meta_of(_by_name(engine, ids)["paris.jpg"]) == PhotoMeta()
        _assert_same(_meta_of(_by_name(engine, ids)["rio.jpg"]), expected["rio.jpg"])
        monkeypatch.setattr(photos, "read_photo", real)
        engine.add_paths([folder])
        _assert_same(_meta_of(_by_name(engine, ids)["paris.jpg"]), expected["paris.jpg"])
