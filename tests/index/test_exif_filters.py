"""Camera-style photos indexed from disk: their EXIF lands in the catalog and every metadata filter
selects exactly the photos whose EXIF says so (oracle: the facts the test wrote), inside the search."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing.exif_photos import write_photo

# (name, camera make, model, taken, offset, (lat, ref), (lon, ref)) — None: the tag is absent
PHOTOS = [
    ("paris.jpg", "Canon", "Canon EOS R5", "2023:07:14 18:30:05", "+02:00", (((48, 1), (51, 1), (2964, 100)), "N"),
     (((2, 1), (17, 1), (4000, 100)), "E")),
    ("rio.jpg", "SONY", "ILCE-7M4", "2022:12:31 23:59:59", "-03:00", (((22, 1), (54, 1), (0, 1)), "S"),
     (((43, 1), (12, 1), (0, 1)), "W")),
    ("alps.jpg", "Canon", "Canon EOS 5D", "2023:07:15 09:00:00", None, (((46, 1), (30, 1), (0, 1)), "N"),
     (((8, 1), (0, 1), (0, 1)), "E")),
    ("phone.jpg", "Apple", "iPhone 12", "2024:01:02 10:00:00", "+00:00", None, None),
    ("scan.jpg", None, None, None, None, None, None),
]


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_exif_of_camera_photos_lands_in_the_catalog_and_filters(settings, tmp_path: Path) -> None:
    folder = tmp_path / "camera"
    for seed, (name, make, model, taken, offset, lat, lon) in enumerate(PHOTOS):
        gps = {}
        if lat is not None:
            gps = {"lat": lat[0], "lat_ref": lat[1], "lon": lon[0], "lon_ref": lon[1]}
        write_photo(folder / name, seed, size=(64 + 16 * seed, 48), make=make, model=model, taken=taken,
                    offset=offset, **gps)
    with Engine.open(settings) as engine:
        report = engine.add_paths([folder])
        assert len(report.added) == len(PHOTOS) and not report.skipped
        records = {Path(r.path).name: r for r in engine.get(report.added)}

        paris, rio, alps = records["paris.jpg"], records["rio.jpg"], records["alps.jpg"]
        assert (paris.camera_make, paris.camera_model, paris.taken_offset) == ("Canon", "Canon EOS R5", "+02:00")
        assert paris.taken_at == _utc("2023-07-14T16:30:05")  # the offset applied: UTC
        assert alps.taken_at == _utc("2023-07-15T09:00:00") and alps.taken_offset is None  # wall clock as UTC
        assert round(paris.gps_lat, 6) == round(48 + 51 / 60 + 29.64 / 3600, 6) and paris.gps_lon > 2.29
        assert rio.gps_lat < 0 and rio.gps_lon < 0  # south and west are negative
        assert records["scan.jpg"].taken_at is None and records["scan.jpg"].camera_make is None

        def names(**where: object) -> set[str]:
            hits = engine.search_text("a photo", k=50, filter=SearchFilter(**where))
            return {Path(h.path).name for h in hits}

        def oracle(keep) -> set[str]:
            return {name for name, rec in records.items() if keep(rec)}

        assert names(camera="canon") == oracle(lambda r: r.camera_make == "Canon") == {"paris.jpg", "alps.jpg"}
        assert names(camera="iphone 12") == {"phone.jpg"}
        assert names(taken_after="2023-07-01", taken_before="2023-07-31") == {"paris.jpg", "alps.jpg"}
        assert names(taken_after="2023-07-15") == {"alps.jpg", "phone.jpg"}  # a date alone: that whole day on
        assert names(has_gps=True) == oracle(lambda r: r.gps_lat is not None) == {"paris.jpg", "rio.jpg", "alps.jpg"}
        assert names(has_gps=False) == {"phone.jpg", "scan.jpg"}
        europe = {"min_lat": 35, "min_lon": -10, "max_lat": 60, "max_lon": 20}
        assert names(bbox=europe) == {"paris.jpg", "alps.jpg"}
        assert names(bbox=europe, camera="EOS R5") == {"paris.jpg"}
        assert names(min_width=100) == oracle(lambda r: r.width >= 100) == {"phone.jpg", "scan.jpg"}

        # k results whenever k match: the filter is applied inside the search, not after it
        hits = engine.search_text("a photo", k=2, filter=SearchFilter(has_gps=True))
        assert len(hits) == 2 and {Path(h.path).name for h in hits} <= {"paris.jpg", "rio.jpg", "alps.jpg"}
        q = engine.encode_text(["a photo"])[0]
        gps_ids = np.array(sorted(r.id for r in records.values() if r.gps_lat is not None))
        scores = engine.store.get(gps_ids) @ q
        assert [h.id for h in hits] == [int(i) for i in gps_ids[np.argsort(-scores, kind="stable")][:2]]
