"""Fixtures of the agent tests: a fake engine."""

from __future__ import annotations

import pytest

from img_agent.testing.fake_engine import FakeEngine


@pytest.fixture
def fake_engine() -> FakeEngine:
    """An engine double whose every query returns images 1..8 with falling scores."""
    return FakeEngine()
