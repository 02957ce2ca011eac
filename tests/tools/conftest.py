"""Fixtures for the tool surface: the fake engine over real files, and tools over it.

The fake follows the engine's contract but makes up scores, so the adapters are tested without the
model or faiss; the real engine is driven end to end in ``test_mcp_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from img_agent.config import Settings
from img_agent.embed.images import iter_image_files
from img_agent.testing.fake_engine import FakeEngine
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox


@pytest.fixture
def fake_engine(settings: Settings) -> FakeEngine:
    """An empty fake store; ``add_paths`` walks folders like the engine."""
    return FakeEngine(default=None, settings=settings, walk=iter_image_files)


@pytest.fixture
def tools(fake_engine: FakeEngine, image_dir: Path) -> ImageTools:
    """Tools over the fake engine; only ``image_dir`` is allowed."""
    return ImageTools(fake_engine, Sandbox([image_dir], max_file_bytes=fake_engine.settings.max_file_bytes))


@pytest.fixture
def indexed_tools(tools: ImageTools, image_dir: Path) -> ImageTools:
    """Tools whose index holds the 12 images of ``image_dir``."""
    tools.add_images([str(image_dir)])
    return tools
