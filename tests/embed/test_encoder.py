"""CLIP encoder: tiny-test model, batched encoding, the ingestion pipeline, weight resolution that never hangs."""

from __future__ import annotations

import errno
import hashlib
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_agent.errors import ConfigError, ImageDecodeError, InvalidInputError, ModelError
from img_agent.embed import encoder as encoder_module
from img_agent.embed.encoder import (
    MODEL_PRESETS,
    ClipEncoder,
    EncodedChunk,
    clear_encoder_cache,
    default_pretrained,
    get_encoder,
    resolve_device,
)
from img_agent.embed.images import DuplicateItem, read_image_file
from img_agent.results import SkippedItem
from img_agent.testing import make_images

MAX_BYTES = 10_000_000
MAX_PIXELS = 10_000_000


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return ClipEncoder.create("tiny-test", "", device="cpu")


def _loader(encoder: ClipEncoder, known: set[str] | None = None):
    """An engine-like ``load``: read, hash, dedupe, decode; the payload is the path."""

    def load(path: Path) -> tuple[str, Image.Image]:
        loaded = read_image_file(
            path,
            max_bytes=MAX_BYTES,
            max_pixels=MAX_PIXELS,
            draft_size=encoder.image_size,
            known_hash=(known.__contains__ if known is not None else None),
        )
        return str(path), loaded.image

    return load


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim) and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- import + presets


def test_importing_the_encoder_does_not_import_torch():
    code = "import sys, img_agent.embed.encoder; assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_presets_are_data_and_their_default_tags_exist():
    import open_clip

    assert MODEL_PRESETS["tiny-test"].random_weights
    assert "meaningless" in MODEL_PRESETS["tiny-test"].summary
    for preset in MODEL_PRESETS.values():
        if preset.open_clip_name:
            assert preset.open_clip_name in open_clip.list_models()
            assert open_clip.get_pretrained_cfg(preset.open_clip_name, preset.default_pretrained)
    assert default_pretrained("ViT-B-32") == "laion2b_s34b_b79k"
    assert default_pretrained("tiny-test") is None and default_pretrained("nonsense") is None


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


# --------------------------------------------------------------------------- tiny-test encoding


def test_tiny_test_attributes(tiny: ClipEncoder):
    assert (tiny.name, tiny.pretrained, tiny.dim, tiny.image_size, tiny.device) == (
        "tiny-test",
        "random-seed-0",
        32,
        32,
        "cpu",
    )


def test_text_and_image_embeddings_are_unit_float32(tiny: ClipEncoder, image_dir: Path):
    texts = ["a red square", "", "ein Hund im Schnee", "x" * 2000]  # empty and over-long texts are fine
    _assert_unit_rows(tiny.encode_text(texts), 4, tiny.dim)
    images = [Image.open(p) for p in sorted(image_dir.glob("*.png"))]
    images.append(Image.new("RGBA", (5, 300), (0, 0, 0, 0)))  # odd mode and shape
    _assert_unit_rows(tiny.encode_images(images), len(images), tiny.dim)
    assert tiny.encode_text([]).shape == (0, tiny.dim)
    assert tiny.encode_images([]).shape == (0, tiny.dim)
    with pytest.raises(InvalidInputError):
        tiny.encode_text("a single string")


def test_tiny_test_is_deterministic_and_leaves_global_rng_alone(tiny: ClipEncoder, image_dir: Path):
    import torch

    state = torch.random.get_rng_state()
    again = ClipEncoder.create("tiny-test", "ignored-for-random-weights", device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())
    images = [Image.open(p) for p in sorted(image_dir.glob("*.jpg"))[:4]]
    np.testing.assert_array_equal(tiny.encode_text(["cat", "dog"]), again.encode_text(["cat", "dog"]))
    np.testing.assert_array_equal(tiny.encode_images(images), again.encode_images(images))
    assert again.pretrained == "random-seed-0"
    # Different inputs give different embeddings (the model is not degenerate).
    text = tiny.encode_text(["cat", "dog"])
    assert float(text[0] @ text[1]) < 0.999


def test_batched_preprocessing_equals_the_model_transform(tiny: ClipEncoder, image_dir: Path):
    import torch

    images = [Image.open(p).convert("RGB") for p in sorted(image_dir.glob("*"))[:5] if p.is_file()]
    one_by_one = torch.stack([tiny.preprocess(im) for im in images])
    batched = tiny._collate([tiny._prepare_pixels(im) for im in images])
    assert one_by_one.shape == (len(images), 3, 32, 32)
    assert torch.equal(one_by_one, batched)


# --------------------------------------------------------------------------- encode_stream


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_matches_encode_images_in_order(tiny: ClipEncoder, image_dir: Path, workers: int):
    paths = sorted(image_dir.rglob("*.*"))
    load = _loader(tiny)
    expected = tiny.encode_images([load(p)[1] for p in paths])
    progress: list[tuple[int, int | None, str]] = []

    stream = tiny.encode_stream(paths, load, batch_size=5, workers=workers, progress=lambda *a: progress.append(a))
    chunks = list(stream)
    assert all(isinstance(c, EncodedChunk) for c in chunks)
    assert [len(c.payloads) for c in chunks] == [5, 5, 2]
    payloads = [p for c in chunks for p in c.payloads]
    vectors = np.concatenate([c.vectors for c in chunks])
    assert payloads == [str(p) for p in paths]
    _assert_unit_rows(vectors, len(paths), tiny.dim)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert [c.skipped for c in chunks] == [[], [], []]
    assert [(d, t) for d, t, _ in progress] == [(5, 12), (10, 12), (12, 12)]
    assert progress[-1][2] == "encoded 12 of 12 images (0 skipped)"


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_skips_bad_inputs_with_reasons_and_goes_on(tiny: ClipEncoder, tmp_path: Path, workers: int):
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
    # good[1] itself is also "known": both it and its copy are reported as duplicates.
    items = [good[0], fake, empty, good[1], half, bad / "missing.jpg", good[2], dangling, bomb, duplicate, good[3]]

    chunks = list(tiny.encode_stream(items, _loader(tiny, known), batch_size=2, workers=workers))
    payloads = [p for c in chunks for p in c.payloads]
    assert payloads == [str(good[0]), str(good[2]), str(good[3])]
    assert sum(len(c.vectors) for c in chunks) == 3
    skips = {s.path: s for c in chunks for s in c.skipped}
    reasons = {Path(p).name: s.reason for p, s in skips.items()}
    assert reasons["fake.jpg"] == "not an image (unrecognised format)"
    assert reasons["empty.png"] == "zero-byte file"
    assert reasons["half.jpg"].startswith("truncated or corrupt image: ")
    assert reasons["missing.jpg"] == "no such file or directory"
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert reasons["bomb.png"].startswith("image too large")
    duplicates = {Path(p).name for p, s in skips.items() if isinstance(s, DuplicateItem)}
    assert duplicates == {good[1].name, "copy.jpg"}
    assert all(reasons[name].startswith("duplicate") for name in duplicates)
    assert len(skips) == 8
    # Vectors are those of the good files alone.
    expected = tiny.encode_images([_loader(tiny)(p)[1] for p in (good[0], good[2], good[3])])
    np.testing.assert_allclose(np.concatenate([c.vectors for c in chunks]), expected, atol=1e-5)


def test_stream_turns_os_errors_into_skips_and_bugs_into_exceptions(tiny: ClipEncoder):
    image = Image.new("RGB", (40, 40), (10, 200, 30))

    def load(item: str) -> tuple[str, Image.Image]:
        if item == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", item)
        if item == "undecodable":
            raise ImageDecodeError("truncated or corrupt image: broken data stream")
        return item, image

    chunks = list(tiny.encode_stream(["a", "locked", "undecodable", "b"], load, batch_size=8, workers=2))
    assert [c.payloads for c in chunks] == [["a", "b"]]
    assert chunks[0].skipped == [
        SkippedItem(path="locked", reason="cannot read file: Permission denied"),
        SkippedItem(path="undecodable", reason="truncated or corrupt image: broken data stream"),
    ]

    def buggy(item: str) -> tuple[str, Image.Image]:
        raise RuntimeError("bug in the loader")

    with pytest.raises(RuntimeError, match="bug in the loader"):
        list(tiny.encode_stream(["a", "b"], buggy, workers=2))


def test_stream_only_skips_still_yields_a_chunk(tiny: ClipEncoder, tmp_path: Path):
    chunks = list(tiny.encode_stream([tmp_path / "nope.jpg"], _loader(tiny), workers=0))
    assert len(chunks) == 1 and chunks[0].payloads == [] and chunks[0].vectors.shape == (0, tiny.dim)
    assert chunks[0].skipped[0].reason == "no such file or directory"
    assert list(tiny.encode_stream([], _loader(tiny))) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_cancel_stops_between_batches(tiny: ClipEncoder, workers: int):
    image = Image.new("RGB", (40, 40), (10, 200, 30))
    cancel = threading.Event()
    loaded: list[int] = []

    def load(item: int) -> tuple[int, Image.Image]:
        loaded.append(item)
        return item, image

    stream = tiny.encode_stream(list(range(100)), load, batch_size=4, workers=workers, cancel=cancel)
    first = next(stream)
    assert first.payloads == [0, 1, 2, 3]
    cancel.set()
    assert list(stream) == []  # the partial next batch is not encoded
    assert len(loaded) <= 4 + max(2 * 4, 2 * workers) + 1  # the pool stopped too

    cancel_early = threading.Event()
    cancel_early.set()
    loaded.clear()
    assert list(tiny.encode_stream(list(range(10)), load, workers=workers, cancel=cancel_early)) == []
    assert loaded == []


def test_stream_reads_ahead_a_bounded_window(tiny: ClipEncoder):
    image = Image.new("RGB", (40, 40))
    loaded = 0
    lock = threading.Lock()

    def load(item: int) -> tuple[int, Image.Image]:
        nonlocal loaded
        with lock:
            loaded += 1
        return item, image

    consumed = 0
    batch_size, workers = 4, 2
    window = max(2 * batch_size, 2 * workers)
    for chunk in tiny.encode_stream(list(range(120)), load, batch_size=batch_size, workers=workers):
        consumed += len(chunk.payloads)
        assert loaded <= consumed + window + 1
    assert consumed == 120


def test_stream_rejects_bad_arguments_at_the_call(tiny: ClipEncoder):
    with pytest.raises(InvalidInputError):
        tiny.encode_stream([1], lambda i: (i, Image.new("RGB", (4, 4))), batch_size=0)
    with pytest.raises(InvalidInputError):
        tiny.encode_stream([1], lambda i: (i, Image.new("RGB", (4, 4))), workers=-1)


# --------------------------------------------------------------------------- cache


def test_get_encoder_builds_each_model_once_across_threads():
    clear_encoder_cache()
    try:
        results: list[ClipEncoder] = []
        threads = [
            threading.Thread(target=lambda: results.append(get_encoder("tiny-test", "laion2b_s34b_b79k", "cpu")))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4 and all(r is results[0] for r in results)
        assert get_encoder("tiny-test", "", "cpu") is results[0]  # random weights: pretrained is irrelevant
    finally:
        clear_encoder_cache()


# --------------------------------------------------------------------------- real models: fail fast, say what to do


def _assert_download_guidance(message: str) -> None:
    assert "weights for ViT-B-32/laion2b_s34b_b79k could not be downloaded" in message
    assert "--pretrained /path/to/open_clip_pytorch_model.bin" in message
    assert "IMG_AGENT_PRETRAINED" in message and "--model tiny-test" in message


def test_uncached_weights_offline_fail_fast_with_guidance():
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        ClipEncoder.create("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert time.monotonic() - start < 15
    _assert_download_guidance(str(info.value))
    assert "HF_HUB_OFFLINE" in str(info.value)


def test_unreachable_hub_fails_fast_with_guidance(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as sock:  # a local port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(encoder_module, "_hub_address", lambda: ("127.0.0.1", port))

    def no_network(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            raise AssertionError("a download was attempted although the hub is unreachable")
        raise FileNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        ClipEncoder.create("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert time.monotonic() - start < 15
    _assert_download_guidance(str(info.value))
    assert f"127.0.0.1:{port} is unreachable" in str(info.value)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelError, match=r"unknown model 'ViT-B-33'; did you mean ViT-B-32"):
        ClipEncoder.create("ViT-B-33", "laion2b_s34b_b79k", device="cpu")


def test_unknown_tag_lists_known_tags():
    expected = r"unknown pretrained tag 'laion9000' for ViT-B-32; known tags .*laion2b_s34b_b79k"
    with pytest.raises(ModelError, match=expected):
        ClipEncoder.create("ViT-B-32", "laion9000", device="cpu")


def test_missing_checkpoint_path_and_empty_folder(tmp_path: Path):
    with pytest.raises(ModelError, match=r"checkpoint file not found: .*nope\.bin"):
        ClipEncoder.create("ViT-B-32", str(tmp_path / "nope.bin"), device="cpu")
    with pytest.raises(ModelError, match="no checkpoint in folder"):
        ClipEncoder.create("ViT-B-32", str(tmp_path), device="cpu")


def test_unusable_checkpoint_becomes_model_error(tmp_path: Path, monkeypatch):
    import open_clip

    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    checkpoint.write_bytes(b"not a checkpoint")
    seen: dict[str, object] = {}

    def fake_create(name, pretrained=None, **kwargs):  # instantiating ViT-B-32 would cost seconds
        seen.update(name=name, pretrained=pretrained, **kwargs)
        raise pickle.UnpicklingError("Weights only load failed.\nlong explanation")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelError) as info:
        ClipEncoder.create("ViT-B-32", str(tmp_path), device="cpu")  # a folder holding the checkpoint
    assert seen["name"] == "ViT-B-32" and seen["pretrained"] == str(checkpoint)
    assert str(info.value).startswith(f"cannot load weights {checkpoint} into ViT-B-32: Weights only load failed.")
    assert "long explanation" not in str(info.value)
