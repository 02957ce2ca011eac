"""Fixtures for the web side: a real service of a real store, its HTTP listener on a free loopback port.

``web_server`` (one per test module: starting a service takes seconds) and ``web_server_fresh`` (one
per test, for tests that change the store) yield a :class:`WebServer`: ``base_url``
(``http://127.0.0.1:PORT``), ``token``, ``url`` (the address ``img-agent web`` prints, token
included), ``data_dir``, ``image_dir`` (12 generated images, all indexed with the tiny-test model;
the store's allowed folder) and ``bearer`` (the ``Authorization`` header for API clients).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_support import WEB_IMAGES, WebServer, start_web_server

__all__ = ["WEB_IMAGES", "WebServer", "start_web_server"]


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One served store for the whole test module (do not change its images: use web_server_fresh)."""
    with start_web_server(tmp_path_factory.mktemp("web")) as server:
        yield server


@pytest.fixture
def web_server_fresh(tmp_path: Path) -> Iterator[WebServer]:
    """A served store of this test's own."""
    with start_web_server(tmp_path / "web") as server:
        yield server
