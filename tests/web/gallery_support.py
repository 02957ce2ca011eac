"""Support for the gallery browser tests: page scripts, and a store served with the fake LLM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web_support import WebServer, start_web_server

from img_agent.testing.fake_llm import FakeLLMServer

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
