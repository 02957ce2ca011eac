"""Model weights: presets are data, one weights label, resolution that never hangs and says what to do."""

from __future__ import annotations

import pickle
import socket
import time
from pathlib import Path

import pytest

from img_agent.embed import weights as weights_module
from img_agent.embed.encoder import ClipEncoder
from img_agent.embed.weights import MODEL_PRESETS, default_pretrained, weights_label
from img_agent.errors import ConfigError, ModelError


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


def test_weights_label_is_one_name_for_store_and_encoder(tmp_path: Path, monkeypatch):
    assert weights_label("tiny-test", "anything") == "random-seed-0"
    assert weights_label("ViT-B-32", None) == weights_label("ViT-B-32", " default ") == "laion2b_s34b_b79k"
    assert weights_label("ViT-B-32", "openai") == "openai"
    checkpoint = tmp_path / "ck.bin"
    checkpoint.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert weights_label("ViT-B-32", "ck.bin") == str(checkpoint.resolve())
    with pytest.raises(ConfigError, match="no default weights"):
        weights_label("RN50-quickgelu", "")
    assert ClipEncoder.create("tiny-test", "", device="cpu").pretrained == weights_label("tiny-test", "")


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
    monkeypatch.setattr(weights_module, "_hub_address", lambda: ("127.0.0.1", port))

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
