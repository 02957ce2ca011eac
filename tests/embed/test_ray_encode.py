"""Encoding on Ray Data gives the vectors, facts and skip reasons of the local pipeline."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from img_agent.embed import ray_encode
from img_agent.embed.encoder import get_encoder
from img_agent.embed.pipeline import Encoded, Pipeline
from img_agent.embed.ray_encode import encode_on_ray
from img_agent.errors import ConfigError
from img_agent.results import SkippedItem
from img_agent.testing import make_images
from img_agent.testing.exif_photos import write_photo

ray = pytest.importorskip("ray")

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000
BATCH = 5


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One small local Ray for the module (workers run the tiny model with torch, offline)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"IMG_AGENT_INFERENCE": "torch", "HF_HUB_OFFLINE": "1"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """11 generated images, a photo with EXIF facts, a corrupt file and a zero-byte file."""
    paths = make_images(tmp_path / "images", 11)
    paths.append(write_photo(tmp_path / "images" / "photo.jpg", make="Canon", model="EOS R5", orientation=6,
                             taken="2023:07:14 18:30:05", offset="+02:00", lat=((48, 1), (51, 1), (24, 1)),
                             lat_ref="N", lon=((2, 1), (21, 1), (3, 1)), lon_ref="E"))
    corrupt = tmp_path / "images" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    empty = tmp_path / "images" / "empty.png"
    empty.touch()
    return sorted([*paths, corrupt, empty])


def _encode(paths: list[Path], **kwargs) -> list[Encoded | SkippedItem]:
    return list(encode_on_ray(
        paths, model="tiny-test", pretrained=None, address=None, batch_size=BATCH, max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS, inference="torch", actors=1, **kwargs,
    ))


@pytest.mark.slow
def test_ray_batches_match_the_local_pipeline(local_ray, files: list[Path]):
    progress: list[tuple[int, int | None, str]] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_encode, files, progress=lambda *a: progress.append(a))
        tiny = get_encoder("tiny-test", "", "cpu", "torch")  # the local oracle, built while the actors start
        with Pipeline(tiny, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, batch_size=BATCH, workers=0) as pipe:
            local = list(pipe.encode(pipe.read(files)))
        out = running.result(timeout=300)
    local_facts = {f.path: f for o in local if isinstance(o, Encoded) for f in o.files}
    local_vectors = {f.path: v for o in local if isinstance(o, Encoded) for f, v in zip(o.files, o.vectors)}
    local_skips = {o.path: o.reason for o in local if isinstance(o, SkippedItem)}
    assert len(local_facts) == 12 and set(local_skips) == {str(files[0].parent / "corrupt.jpg"),
                                                          str(files[0].parent / "empty.png")}

    encoded = [o for o in out if isinstance(o, Encoded)]
    assert all(isinstance(o, (Encoded, SkippedItem)) for o in out)
    assert all(1 <= len(o.files) <= BATCH and o.vectors.shape == (len(o.files), tiny.dim) for o in encoded)
    facts = {f.path: f for o in encoded for f in o.files}
    assert sum(len(o.files) for o in encoded) == len(facts) == 12
    for path, local_fact in local_facts.items():
        got = facts[path]
        assert (got.sha256, got.size, got.width, got.height, got.format, got.photo) == (
            local_fact.sha256, local_fact.size, local_fact.width, local_fact.height, local_fact.format,
            local_fact.photo)
        assert got.mtime == local_fact.mtime
    for o in encoded:
        assert o.vectors.dtype == np.float32
        for f, v in zip(o.files, o.vectors):
            assert float(v @ local_vectors[f.path]) >= 0.9999
    assert {o.path: o.reason for o in out if isinstance(o, SkippedItem)} == local_skips
    assert local_skips[str(files[0].parent / "empty.png")] == "zero-byte file"
    photo = facts[str(files[0].parent / "photo.jpg")].photo
    assert photo is not None and photo.camera_make == "Canon" and photo.orientation == 6 and photo.gps_lat
    assert progress[-1][:2] == (14, 14) and progress[-1][2] == "encoded 12 of 14 images (2 skipped)"
    assert [d for d, _, _ in progress] == sorted(d for d, _, _ in progress)
    assert ray.is_initialized()  # a Ray it did not start stays up


def test_cancel_stops_taking_result_batches(files: list[Path]):
    """The driver loop, fed by the two stages run in this process: cancel ends it before the next batch."""
    actor = ray_encode._EncodeActor(model="tiny-test", pretrained="", inference="torch", device="cpu")
    taken: list[int] = []

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(files), BATCH):
            taken.append(start)
            paths = np.array([str(p) for p in files[start : start + BATCH]], dtype=object)
            yield actor(ray_encode._read_batch(
                {"path": paths}, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, draft_size=actor.encoder.image_size))

    cancel = threading.Event()
    progress: list[tuple[int, int | None, str]] = []

    def report(*args) -> None:
        progress.append(args)
        cancel.set()

    out = list(ray_encode._results(batches(), len(files), report, cancel))
    assert taken == [0, BATCH] and progress == [(BATCH, len(files), "encoded 3 of 14 images (2 skipped)")]
    assert [o.path for o in out[:2]] == [str(p) for p in files[:2]]  # corrupt.jpg, empty.png sort first
    assert len(out) == 3 and [f.path for f in out[2].files] == [str(p) for p in files[2:BATCH]]
    assert list(encode_on_ray(files, model="tiny-test", pretrained=None, address="127.0.0.1:1", batch_size=BATCH,
                              max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, cancel=cancel)) == []


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch, files: list[Path]):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'img-agent\[ray\]'"):
        _encode(files)


def test_unreachable_address_fails_fast_with_what_to_do(monkeypatch: pytest.MonkeyPatch, files: list[Path]):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    started = time.monotonic()
    expected = rf"cannot reach the Ray cluster at 'ray://127.0.0.1:{port}'.*ray start --head"
    with pytest.raises(ConfigError, match=expected):
        list(encode_on_ray(files, model="tiny-test", pretrained=None, address=f"ray://127.0.0.1:{port}",
                           batch_size=BATCH, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, image_size=64))
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_index_on_ray_into_milvus_lite_skips_what_is_stored(local_ray, files: list[Path], tmp_path: Path):
    """``add_paths(ray=...)`` on a local Ray into a Milvus Lite store: files committed before are not encoded
    again, known content is skipped by its hash, bad files get their reasons, and the vectors are the model's."""
    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.index.ray_ingest import RayCluster

    folder = files[0].parent
    twin = folder / "copy-of-photo.jpg"  # the same bytes as photo.jpg, under another name
    twin.write_bytes((folder / "photo.jpg").read_bytes())
    settings = Settings(data_dir=tmp_path / "data", model="tiny-test", vector_store=str(tmp_path / "milvus.db"),
                        batch_size=BATCH, inference="torch")
    with Engine.open(settings) as engine:
        first = engine.add_paths(files[:7])  # an earlier run (here local) committed some of the files
        assert len(first.added) == 5 and len(first.skipped) == 2  # corrupt.jpg and empty.png sort first
        progress: list[tuple[int, int | None, str]] = []
        report = engine.add_paths([folder], ray=RayCluster(actors=1), progress=lambda *a: progress.append(a))
        assert report.unchanged == 5  # found by path, size and mtime: not sent to Ray at all
        assert progress[-1][:2] == (10, 10)  # the 7 other images, the copy and the two bad files went to Ray
        assert len(report.added) == 7
        skipped = {Path(s.path).name: s.reason for s in report.skipped}
        twins = [name for name in ("photo.jpg", "copy-of-photo.jpg") if name in skipped]
        assert len(twins) == 1 and skipped[twins[0]].startswith("duplicate of")  # whichever came back second
        assert skipped["empty.png"] == "zero-byte file" and skipped["corrupt.jpg"].startswith("truncated or corrupt")
        status = engine.status()
        assert status.live == 12 and status.vector_store == str(tmp_path / "milvus.db")
        for record in engine.get(report.added):  # each image finds itself with the vector this process computes
            hits = engine.search_image(record.path, 1)
            assert hits[0].id == record.id and hits[0].score >= 0.999
