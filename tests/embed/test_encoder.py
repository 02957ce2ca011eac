"""CLIP encoder: tiny-test model, batched encoding, the preprocessing split, the process cache."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_agent.embed.encoder import ClipEncoder, clear_encoder_cache, get_encoder, resolve_device
from img_agent.errors import ConfigError, InvalidInputError


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return ClipEncoder.create("tiny-test", "", device="cpu")


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim) and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- import + device


def test_importing_the_encoder_does_not_import_torch():
    code = (
        "import sys, img_agent.embed.encoder, img_agent.embed.weights, img_agent.embed.pipeline; "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


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
    batched = tiny.collate([tiny.prepare(im) for im in images])
    assert one_by_one.shape == (len(images), 3, 32, 32)
    assert torch.equal(one_by_one, batched)
    # the forward pass over preprocessed pixels is the one encode_images runs
    np.testing.assert_array_equal(tiny.encode_pixels(batched), tiny.encode_images(images))


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
