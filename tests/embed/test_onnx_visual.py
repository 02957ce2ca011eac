"""ONNX Runtime for the visual tower: same embeddings as torch, a reused cache, and torch whenever it cannot be had."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from img_agent.config import Settings
from img_agent.embed import onnx_visual
from img_agent.embed.encoder import ClipEncoder, clear_encoder_cache, get_encoder
from img_agent.errors import ConfigError, ModelError
from img_agent.testing import make_images


@pytest.fixture(scope="module")
def torch_encoder() -> ClipEncoder:
    return ClipEncoder.create("tiny-test", "", device="cpu")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the module, so the graph is exported once."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def cache(shared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    return onnx_visual.default_cache_dir()


def _twin(encoder: ClipEncoder, inference: str) -> ClipEncoder:
    """Another encoder over the same torch model, images encoded by ``inference``."""
    twin = copy.copy(encoder)
    twin.set_inference(inference)
    return twin


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Image.Image]:
    paths = make_images(tmp_path_factory.mktemp("imgs"), 6, size=(64, 48))
    return [Image.open(p).convert("RGB") for p in paths]


def test_onnx_runtime_embeddings_match_torch_on_the_same_weights(torch_encoder, cache, images):
    ort_encoder = _twin(torch_encoder, "onnx")
    assert (ort_encoder.runtime, torch_encoder.runtime) == ("onnxruntime", "torch")
    got, expected = ort_encoder.encode_images(images), torch_encoder.encode_images(images)
    assert got.shape == expected.shape == (6, torch_encoder.dim) and got.dtype == np.float32
    assert onnx_visual.min_cosine(got, expected) >= 0.9999
    assert not np.array_equal(got, expected[::-1])  # distinct images, distinct rows
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert [p.suffix for p in cache.iterdir()] == [".onnx"]  # no temporary file left behind


def test_second_load_reuses_the_cached_graph(torch_encoder, cache, monkeypatch):
    _twin(torch_encoder, "onnx")  # exported here unless an earlier test did
    (path,) = cache.glob("*.onnx")
    stamp = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(onnx_visual, "_export", no_export)
    assert _twin(torch_encoder, "auto").runtime == "onnxruntime"
    assert path.stat().st_mtime_ns == stamp


def test_the_cache_key_follows_the_weights(torch_encoder, cache):
    import torch

    other = ClipEncoder.create("tiny-test", "", device="cpu")
    first = onnx_visual.cache_path(torch_encoder._model, "tiny-test")
    assert onnx_visual.cache_path(other._model, "tiny-test") == first  # same seeded weights, same file
    with torch.no_grad():
        next(other._model.visual.parameters()).add_(1.0)
    assert onnx_visual.cache_path(other._model, "tiny-test") != first


def test_a_corrupt_cache_file_is_exported_again(torch_encoder, tmp_path, monkeypatch, images):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = onnx_visual.cache_path(torch_encoder._model, "tiny-test")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx graph")
    encoder = _twin(torch_encoder, "auto")
    assert encoder.runtime == "onnxruntime"
    assert path.read_bytes() != b"not an onnx graph"
    assert onnx_visual.min_cosine(encoder.encode_images(images), torch_encoder.encode_images(images)) >= 0.9999


def test_a_corrupt_cache_that_cannot_be_rebuilt_falls_back_to_torch(torch_encoder, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = onnx_visual.cache_path(torch_encoder._model, "tiny-test")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07garbage")

    def failing_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_visual, "_export", failing_export)
    with caplog.at_level(logging.WARNING, logger="img_agent.embed.onnx_visual"):
        assert _twin(torch_encoder, "auto").runtime == "torch"
    assert "unsupported operator" in caplog.text and "IMG_AGENT_INFERENCE=torch" in caplog.text
    with pytest.raises(ModelError, match="cannot export the visual tower"):
        _twin(torch_encoder, "onnx")


def test_a_failing_session_switches_the_encoder_to_torch(torch_encoder, cache, images):
    encoder = _twin(torch_encoder, "onnx")

    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("session died")

    encoder._onnx = onnx_visual.OnnxVisual(Broken(), Path("x.onnx"))
    got = encoder.encode_images(images[:2])
    np.testing.assert_allclose(got, torch_encoder.encode_images(images[:2]), atol=1e-6)
    assert encoder.runtime == "torch"


def test_torch_inference_never_touches_onnx_runtime(torch_encoder, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the ONNX Runtime path ran for inference='torch'")

    monkeypatch.setattr(onnx_visual, "_import_ort", forbidden)
    monkeypatch.setattr(onnx_visual, "load_onnx_visual", forbidden)
    assert _twin(torch_encoder, "torch").runtime == "torch"


def test_onnx_without_onnxruntime_is_a_clear_error_and_auto_uses_torch(torch_encoder, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ModelError, match="pip install onnxruntime") as info:
        _twin(torch_encoder, "onnx")
    assert "IMG_AGENT_INFERENCE=torch" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="img_agent.embed.onnx_visual"):
        assert _twin(torch_encoder, "auto").runtime == "torch"
    assert "not installed" in caplog.text


def test_onnx_is_cpu_only_and_unknown_runtimes_are_refused(torch_encoder):
    model = torch_encoder._model
    with pytest.raises(ModelError, match="CPU only"):
        onnx_visual.select_visual_runtime(model, "tiny-test", 32, "cuda", "onnx")
    assert onnx_visual.select_visual_runtime(model, "tiny-test", 32, "cuda:0", "auto") is None
    with pytest.raises(ConfigError, match="auto, torch or onnx"):
        onnx_visual.select_visual_runtime(model, "tiny-test", 32, "cpu", "tensorrt")


def test_the_setting_reaches_the_encoder_cache(cache, monkeypatch):
    monkeypatch.setenv("IMG_AGENT_INFERENCE", "onnx")
    assert Settings().inference == "onnx"
    assert Settings(inference="torch").inference == "torch"
    with pytest.raises(ValidationError):
        Settings(inference="tensorrt")
    clear_encoder_cache()
    try:
        torch_one = get_encoder("tiny-test", "", "cpu", "torch")
        ort_one = get_encoder("tiny-test", "", "cpu", Settings().inference)
        assert (torch_one.runtime, ort_one.runtime) == ("torch", "onnxruntime")
        assert get_encoder("tiny-test", "", "cpu", "onnx") is ort_one
    finally:
        clear_encoder_cache()
