"""Support for the gallery browser tests: the browser, page helpers and scripts, and a store served
with the fake LLM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from web_support import WebServer, start_web_server

from img_agent.testing.fake_llm import FakeLLMServer

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium); "
    "Playwright's own browser download is not used")
VIEWPORT = {"width": 1280, "height": 800}
LLM_IMAGES = 8

ALL_THUMBS_LOADED = """n => {
  const imgs = [...document.querySelectorAll('[data-testid=result-grid] img')].slice(0, n);
  return imgs.length > 0 && imgs.every(img => img.complete && img.naturalWidth > 0);
}"""

DROP_FILE = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const zone = document.querySelector('[data-testid=drop-zone]');
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""

RECORD_EVENT_SOURCES = """
window.__eventSources = [];
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(url, init) { super(url, init); window.__eventSources.push(String(url)); }
};
"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Debian Chromium, driven by Playwright."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


def search(page: Page, text: str) -> None:
    """Type ``text`` into the search box, press Enter and wait for the results."""
    box = page.get_by_test_id("search-input")
    box.fill(text)
    box.press("Enter")
    settle(page)


def settle(page: Page) -> None:
    page.wait_for_function("() => !document.body.classList.contains('busy')")


def card_ids(page: Page) -> list[int]:
    return [int(i) for i in page.get_by_test_id("result-card").evaluate_all("cs => cs.map(c => c.dataset.id)")]


def home(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    expect(page.get_by_test_id("status-live")).not_to_have_text("–")


@dataclass(frozen=True)
class LLMWebServer:
    """A served store (its :class:`WebServer` attributes) whose service talks to the scripted fake LLM."""

    web: WebServer
    llm: FakeLLMServer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.web, name)


@contextlib.contextmanager
def serve_with_llm(base: Path, llm: FakeLLMServer) -> Iterator[LLMWebServer]:
    """A store of generated images served with the web listener on, its LLM the fake server."""
    env = {"LLM_BASE_URL": llm.url, "LLM_API_KEY": "test-key", "LLM_MODEL": "fake-model", "LLM_MAX_RETRIES": "0"}
    with start_web_server(base, images=LLM_IMAGES, seed=5, env=env) as server:
        yield LLMWebServer(server, llm)
