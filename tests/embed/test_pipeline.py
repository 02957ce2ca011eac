"""The ingestion pipeline: read and decode ahead, batched forwards, skips with reasons, pass-through, cancel."""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_agent.embed import images as images_module
from img_agent.embed.encoder import ClipEncoder
from img_agent.embed.images import RawFile, read_image_file
from img_agent.embed.pipeline import Encoded, Pipeline
from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.results import SkippedItem
from img_agent.testing import make_images

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return ClipEncoder.create("tiny-test", "", device="cpu")


def _pipeline(encoder: ClipEncoder, **kwargs) -> Pipeline:
    return Pipeline(encoder, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, **kwargs)


def _decoded(encoder: ClipEncoder, paths: Iterable[Path]) -> list[Image.Image]:
    return [read_image_file(p, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, draft_size=encoder.image_size).image
            for p in paths]


def _copies(folder: Path, n: int) -> list[Path]:
    """``n`` small image files (same content; the pipeline does not deduplicate)."""
    folder.mkdir(parents=True)
    source = make_images(folder / "src", 1)[0].read_bytes()
    paths = [folder / f"{i:03d}.jpg" for i in range(n)]
    for p in paths:
        p.write_bytes(source)
    return paths


def _count_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []
    lock = threading.Lock()
    real = images_module.read_file

    def counting(path, **kwargs):
        with lock:
            reads.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(images_module, "read_file", counting)
    return reads


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim) and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_match_encode_images_in_order(tiny: ClipEncoder, image_dir: Path, workers: int):
    paths = sorted(image_dir.rglob("*.*"))
    expected = tiny.encode_images(_decoded(tiny, paths))
    progress: list[tuple[int, int | None, str]] = []

    with _pipeline(tiny, batch_size=5, workers=workers) as pipe:
        out = list(pipe.encode(pipe.read(paths), total=len(paths), progress=lambda *a: progress.append(a)))
    assert all(isinstance(o, Encoded) for o in out)
    assert [len(o.files) for o in out] == [5, 5, 2]
    assert [f.path for o in out for f in o.files] == [str(p) for p in paths]
    facts = out[0].files[0]
    assert facts.sha256 == hashlib.sha256(paths[0].read_bytes()).hexdigest() and facts.width and facts.format
    vectors = np.concatenate([o.vectors for o in out])
    _assert_unit_rows(vectors, len(paths), tiny.dim)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert [(d, t) for d, t, _ in progress] == [(5, 12), (10, 12), (12, 12)]
    assert progress[-1][2] == "encoded 12 of 12 images (0 skipped)"


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_skipped_with_reasons_known_content_passes_through(tiny: ClipEncoder, tmp_path: Path, workers: int):
    good = make_images(tmp_path / "good", 4)
    bad = tmp_path / "bad"
    bad.mkdir()
    fake = bad / "fake.jpg"
    fake.write_text("plain text with a .jpg name")
    empty = bad / "empty.png"
    empty.touch()
    half = bad / "half.jpg"
    data = good[0].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    dangling = bad / "dangling.jpg"
    dangling.symlink_to(bad / "gone.jpg")
    bomb = bad / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)
    duplicate = bad / "copy.jpg"
    duplicate.write_bytes(good[1].read_bytes())
    known = {hashlib.sha256(good[1].read_bytes()).hexdigest()}
    # good[1] itself is also "known": both it and its copy pass through undecoded, as the caller's markers.
    items = [good[0], fake, empty, good[1], half, bad / "missing.jpg", good[2], dangling, bomb, duplicate, good[3]]

    def sort_out(reads: Iterable[RawFile | SkippedItem]) -> Iterator[RawFile | SkippedItem | tuple[str, str]]:
        for item in reads:
            if isinstance(item, RawFile) and item.facts.sha256 in known:
                yield ("known", item.facts.path)
            else:
                yield item

    with _pipeline(tiny, batch_size=2, workers=workers) as pipe:
        out = list(pipe.encode(sort_out(pipe.read(items)), total=len(items)))
    encoded = [o for o in out if isinstance(o, Encoded)]
    assert [f.path for o in encoded for f in o.files] == [str(good[0]), str(good[2]), str(good[3])]
    markers = [o for o in out if isinstance(o, tuple)]
    assert markers == [("known", str(good[1])), ("known", str(duplicate))]  # in input order
    reasons = {Path(o.path).name: o.reason for o in out if isinstance(o, SkippedItem)}
    assert reasons["fake.jpg"] == "not an image (unrecognised format)"
    assert reasons["empty.png"] == "zero-byte file"
    assert reasons["half.jpg"].startswith("truncated or corrupt image: ")
    assert reasons["missing.jpg"] == "no such file or directory"
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert reasons["bomb.png"].startswith("image too large")
    assert len(reasons) + len(markers) == 8
    # Vectors are those of the good files alone.
    expected = tiny.encode_images(_decoded(tiny, (good[0], good[2], good[3])))
    np.testing.assert_allclose(np.concatenate([o.vectors for o in encoded]), expected, atol=1e-5)


def test_os_errors_become_skips_and_bugs_propagate(tiny: ClipEncoder, tmp_path: Path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 2)
    locked, undecodable = tmp_path / "locked.jpg", tmp_path / "undecodable.jpg"
    real = images_module.read_file

    def read(path, **kwargs):
        if path == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        if path == undecodable:
            raise ImageDecodeError("truncated or corrupt image: broken data stream")
        return real(path, **kwargs)

    monkeypatch.setattr(images_module, "read_file", read)
    with _pipeline(tiny, batch_size=8, workers=2) as pipe:
        out = list(pipe.encode(pipe.read([paths[0], locked, undecodable, paths[1]])))
    assert out[:2] == [
        SkippedItem(path=str(locked), reason="cannot read file: Permission denied"),
        SkippedItem(path=str(undecodable), reason="truncated or corrupt image: broken data stream"),
    ]
    assert [f.path for f in out[2].files] == [str(paths[0]), str(paths[1])] and len(out) == 3

    def buggy(path, **kwargs):
        raise RuntimeError("bug in the reader")

    monkeypatch.setattr(images_module, "read_file", buggy)
    with pytest.raises(RuntimeError, match="bug in the reader"):
        with _pipeline(tiny, workers=2) as pipe:
            list(pipe.encode(pipe.read(paths)))


def test_only_skips_still_report_progress(tiny: ClipEncoder, tmp_path: Path):
    progress: list[tuple[int, int | None, str]] = []
    with _pipeline(tiny, workers=0) as pipe:
        out = list(pipe.encode(pipe.read([tmp_path / "nope.jpg"]), total=1, progress=lambda *a: progress.append(a)))
        assert out == [SkippedItem(path=str(tmp_path / "nope.jpg"), reason="no such file or directory")]
        assert progress == [(1, 1, "encoded 0 of 1 images (1 skipped)")]
        assert list(pipe.encode(pipe.read([]))) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_cancel_stops_between_batches(tiny: ClipEncoder, tmp_path: Path, monkeypatch, workers: int):
    paths = _copies(tmp_path / "many", 100)
    reads = _count_reads(monkeypatch)
    cancel = threading.Event()
    with _pipeline(tiny, batch_size=4, workers=workers) as pipe:
        stream = pipe.encode(pipe.read(paths), cancel=cancel)
        first = next(stream)
        assert [f.path for f in first.files] == [str(p) for p in paths[:4]]
        cancel.set()
        assert list(stream) == []  # the partial next batch is not encoded
        assert len(reads) <= 4 + pipe.read_window + pipe.decode_window + 1  # the pools stopped too

    cancel_early = threading.Event()
    cancel_early.set()
    reads.clear()
    with _pipeline(tiny, workers=workers) as pipe:
        assert list(pipe.encode(pipe.read(paths[:10]), cancel=cancel_early)) == []
    assert reads == []


def test_reads_ahead_a_bounded_window(tiny: ClipEncoder, tmp_path: Path, monkeypatch):
    paths = _copies(tmp_path / "many", 120)
    reads = _count_reads(monkeypatch)
    consumed = 0
    with _pipeline(tiny, batch_size=4, workers=2) as pipe:
        window = pipe.read_window + pipe.decode_window
        for batch in pipe.encode(pipe.read(paths)):
            consumed += len(batch.files)
            assert len(reads) <= consumed + window + 1
    assert consumed == 120


def test_bad_arguments_are_refused_at_once(tiny: ClipEncoder):
    with pytest.raises(InvalidInputError):
        _pipeline(tiny, batch_size=0)
    with pytest.raises(InvalidInputError):
        _pipeline(tiny, workers=-1)
