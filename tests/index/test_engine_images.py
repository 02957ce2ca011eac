"""Engine over real files with the tiny random-weight CLIP: ingestion, dedupe, bad input, queries."""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from img_agent.errors import ImageDecodeError, InvalidInputError, ModelError, NotFoundError
from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing import make_images


@pytest.fixture
def engine(settings):
    with Engine.open(settings) as eng:
        yield eng


def test_index_folder_then_search_by_text_image_and_id(engine, image_dir):
    calls = []
    report = engine.add_paths([image_dir], progress=lambda d, t, m: calls.append((d, t)))
    assert len(report.added) == 12 and not report.skipped
    assert calls and calls[-1][0] == calls[-1][1] == 12
    st = engine.status()
    assert st.live == 12 and st.model == "tiny-test" and st.dim == 32

    hits = engine.search_text("a photo of a dog", k=5)
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(-1.0 <= h.score <= 1.0 for h in hits)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    # exact oracle over the stored vectors
    q = engine.encode_text(["a photo of a dog"])[0]
    x = engine.store.get(np.arange(12))
    assert [h.id for h in hits] == np.argsort(-(x @ q), kind="stable")[:5].tolist()

    target = sorted(image_dir.glob("*.jpg"))[0]
    by_file = engine.search_image(target, k=1)
    assert by_file[0].path == str(target.resolve()) and by_file[0].score == pytest.approx(1.0, abs=1e-4)
    by_bytes = engine.search_image(target.read_bytes(), k=1)
    assert by_bytes[0].id == by_file[0].id
    similar = engine.search_similar(by_file[0].id, k=3)
    assert by_file[0].id not in [h.id for h in similar]

    rec = engine.get([by_file[0].id])[0]
    assert rec.format == "JPEG" and (rec.width, rec.height) == (96, 72) and len(rec.sha256) == 64
    thumb = engine.thumbnail(rec.id, max_side=48)
    with Image.open(io.BytesIO(thumb)) as im:
        assert im.format == "JPEG" and max(im.size) <= 48


def test_reindex_encodes_only_new_or_changed_files(engine, image_dir, tmp_path):
    first = engine.add_paths([image_dir])
    again = engine.add_paths([image_dir])
    assert again.added == [] and again.unchanged == 12 and not again.skipped

    # same content elsewhere: skipped as a duplicate, not indexed twice
    copy = tmp_path / "copy.jpg"
    shutil.copy(sorted(image_dir.glob("*.jpg"))[0], copy)
    dup = engine.add_paths([copy])
    assert dup.added == [] and "duplicate of id" in dup.skipped[0].reason

    # touched (new mtime, same bytes): unchanged, nothing encoded
    touched = sorted(image_dir.glob("*.png"))[0]
    os.utime(touched, (1_000_000, 1_000_000))
    assert engine.add_paths([touched]).unchanged == 1

    # changed content at a known path: replaces the old entry
    changed = sorted(image_dir.glob("*.jpg"))[1]
    old_id = engine.catalog.live_by_path(str(changed.resolve())).id
    make_images(tmp_path / "other", 1, seed=99)[0].replace(changed)
    rep = engine.add_paths([changed])
    assert len(rep.added) == 1 and rep.replaced == [old_id]
    assert engine.status().live == 12
    with pytest.raises(NotFoundError):
        engine.get([old_id])

    # vanished files are removed with remove_missing
    gone = sorted(image_dir.glob("*.jpg"))[2]
    gone_id = engine.catalog.live_by_path(str(gone.resolve())).id
    gone.unlink()
    rep = engine.add_paths([image_dir], remove_missing=True)
    assert rep.removed_missing == [gone_id] and engine.status().live == 11
    assert first.added_paths and all(p.startswith("/") for p in first.added_paths)


def test_bad_inputs_are_skipped_with_reasons_and_the_batch_goes_on(engine, image_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.jpg").write_text("this is not an image")
    (bad / "empty.png").write_bytes(b"")
    good = sorted(image_dir.glob("*.jpg"))[0].read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "broken_link.jpg").symlink_to(bad / "missing-target.jpg")
    (bad / "loop").symlink_to(bad)
    Image.new("1", (20000, 20000)).save(bad / "bomb.png")
    engine.settings.max_image_pixels = 10_000_000
    report = engine.add_paths([image_dir, bad, tmp_path / "does-not-exist"])
    reasons = {os.path.basename(s.path): s.reason for s in report.skipped}
    assert len(report.added) == 12
    assert "not an image" in reasons["text.jpg"]
    assert "zero-byte" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "broken_link.jpg" in reasons
    assert "too large" in reasons["bomb.png"]
    assert "does-not-exist" in reasons
    assert engine.status().live == 12
    assert len(engine.search_text("anything", k=20)) == 12


def test_query_errors_are_clear(engine, image_dir):
    assert engine.search_text("empty index is fine", k=3) == []
    engine.add_paths([image_dir])
    with pytest.raises(InvalidInputError, match="empty"):
        engine.search_text("   ")
    with pytest.raises(ImageDecodeError):
        engine.search_image(b"definitely not an image")
    with pytest.raises(NotFoundError):
        engine.search_image(image_dir / "nope.jpg")
    with pytest.raises(NotFoundError):
        engine.search_similar(12345)
    with pytest.raises(InvalidInputError, match="k must be"):
        engine.search_text("x", k=0)


def test_filters_on_real_paths(engine, image_dir):
    engine.add_paths([image_dir])
    sub = str((image_dir / "sub").resolve()) + "/"
    hits = engine.search_text("x", k=20, filter=SearchFilter(folder=sub))
    assert len(hits) == 3 and all(h.path.startswith(sub) for h in hits)
    hits = engine.search_text("x", k=20, filter=SearchFilter(glob="*.PNG"))
    assert len(hits) == 4 and all(h.path.endswith(".png") for h in hits)
    hits = engine.search_text("x", k=20, filter=SearchFilter(formats=["png"]))
    assert len(hits) == 4 and all(h.format == "PNG" for h in hits)


def test_cancel_keeps_what_was_committed(settings, tmp_path):
    folder = tmp_path / "many"
    make_images(folder, 40)
    settings.batch_size = 4
    cancel = threading.Event()

    def progress(done, total, msg):
        if done >= 8:
            cancel.set()

    with Engine.open(settings) as eng:
        rep = eng.add_paths([folder], progress=progress, cancel=cancel)
        assert rep.cancelled and 8 <= len(rep.added) < 40
        assert eng.status().live == len(rep.added)
        rest = eng.add_paths([folder])
        assert len(rest.added) == 40 - len(rep.added) and rest.unchanged == len(rep.added)


def test_missing_weights_fail_fast_with_guidance(tmp_path):
    import time

    from img_agent.config import Settings

    with Engine.open(Settings(data_dir=tmp_path / "real", model="ViT-B-32")) as eng:
        t0 = time.monotonic()
        with pytest.raises(ModelError, match="--pretrained"):
            eng.search_text("a dog")
        assert time.monotonic() - t0 < 20
        # the store is still usable for precomputed vectors
        assert eng.status().live == 0


def test_reopen_adopts_the_store_model(settings, image_dir):
    from img_agent.config import Settings

    with Engine.open(settings) as eng:
        eng.add_paths([image_dir])
    with Engine.open(Settings(data_dir=settings.data_dir)) as eng:  # no --model given
        assert eng.model == "tiny-test"
        assert len(eng.search_text("x", k=3)) == 3


def test_base64_round_trip_helper(engine, image_dir):
    engine.add_paths([image_dir])
    data = base64.b64encode(sorted(image_dir.glob("*.png"))[0].read_bytes())
    hits = engine.search_image(base64.b64decode(data), k=1)
    assert hits[0].path.endswith(".png")


def test_a_call_during_a_slow_model_load_answers_retry_instead_of_waiting(settings, monkeypatch):
    from img_agent.embed import encoder as encoder_module
    from img_agent.errors import ModelLoadingError

    real = encoder_module.get_encoder
    loading = threading.Event()

    def slow_get_encoder(*args, **kwargs):
        loading.set()
        threading.Event().wait(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder_module, "get_encoder", slow_get_encoder)
    with Engine.open(settings, model_wait=0.2) as eng:
        loader = threading.Thread(target=eng.warm_up)
        loader.start()
        assert loading.wait(5)
        with pytest.raises(ModelLoadingError, match="still loading"):
            eng.encode_text(["a dog"])
        loader.join()
        assert eng.encode_text(["a dog"]).shape[0] == 1  # loaded: answers now
