"""Shared fixtures: hermetic settings, a tiny random-weight CLIP, generated images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.testing import make_images


@pytest.fixture(autouse=True)
def _hermetic_env(tmp_path, monkeypatch):
    """Point every default at tmp_path and drop any user configuration from the environment."""
    for key in list(os.environ):
        if key.startswith(("IMG_AGENT_", "LLM_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IMG_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no stray .env is read


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for the tiny offline model, data in tmp_path."""
    return Settings(data_dir=tmp_path / "data", model="tiny-test", workers=2, batch_size=8)


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """A folder of 12 generated, visually distinct images (JPEG and PNG, some in a subfolder)."""
    folder = tmp_path / "images"
    make_images(folder, 12)
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
