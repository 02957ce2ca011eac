"""The thumbnail disk cache is bounded: over real HTTP to a service with a tiny limit, and the limit
read from the settings."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from web_support import WebServer, start_web_server

from img_agent.config import Settings
from img_agent.web.thumbs import EVICT_TO, ThumbnailCache

pytestmark = pytest.mark.slow

LIMIT_MB = 0.05
LIMIT = int(LIMIT_MB * 1024 * 1024)
SIZES = range(40, 97, 8)
"""Thumbnail sizes requested after the first ones: every image at all of them passes the limit twice."""


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with start_web_server(tmp_path_factory.mktemp("web-cache"),
                          env={"IMG_AGENT_THUMB_CACHE_MB": str(LIMIT_MB)}) as server:
        yield server


def cached_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_the_cache_stays_under_its_limit_and_evicts_the_least_recently_used(small_cache: WebServer) -> None:
    folder = small_cache.data_dir / "thumbs"
    with httpx.Client(base_url=small_cache.base_url, headers=small_cache.bearer, timeout=60) as api:

        def thumbnail(image_id: int, size: int) -> httpx.Response:
            thumb = api.get(f"/api/images/{image_id}/thumbnail", params={"size": size})
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            assert max(Image.open(io.BytesIO(thumb.content)).size) <= size
            assert cached_bytes(folder) <= LIMIT
            return thumb

        hits = api.post("/api/search", json={"query": "a picture", "k": 12}).json()["hits"]
        ids, sha = [hit["id"] for hit in hits], {hit["id"]: hit["sha256"] for hit in hits}
        used, oldest = ids[0], ids[1]
        first = thumbnail(used, 32)
        written = len(first.content)
        for size in (32, 36):
            written += sum(len(thumbnail(image_id, size).content) for image_id in ids[1:])
        assert written < LIMIT / 2 and thumbnail(used, 32).content == first.content  # a hit: used now
        evicted = False
        for size in SIZES:
            for image_id in ids:
                written += len(thumbnail(image_id, size).content)
                if not evicted and not (folder / f"{sha[oldest]}-32.jpg").exists():
                    evicted = True  # the first eviction: the oldest files went, the one used since stayed
                    assert (folder / f"{sha[used]}-32.jpg").is_file()
        assert evicted and written > 2 * LIMIT
        assert cached_bytes(folder) > EVICT_TO * LIMIT / 2  # trimmed, not emptied

        etag = first.headers["etag"]
        url = f"/api/images/{used}/thumbnail"
        assert api.get(url, params={"size": 32}, headers={"If-None-Match": etag}).status_code == 304
        again = thumbnail(oldest, 32)  # evicted: made again, the same
        assert again.headers["etag"] == f'"{sha[oldest]}-32"' and (folder / f"{sha[oldest]}-32.jpg").is_file()


class _Tools:
    """What the cache uses of the tools: their engine's settings and the thumbnail maker."""

    def __init__(self, settings: Settings) -> None:
        self.engine = type("Engine", (), {"settings": settings})()
        self.made = 0

    def thumbnail(self, image_id: int, max_side: int = 256) -> bytes:
        self.made += 1
        out = io.BytesIO()
        Image.new("RGB", (max_side, max_side), (image_id, 0, 0)).save(out, format="JPEG")
        return out.getvalue()


def test_the_limit_comes_from_the_settings_and_zero_keeps_no_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from img_agent.testing.fake_engine import record

    image = record(7)
    cache = ThumbnailCache(tmp_path / "default")
    tools = _Tools(Settings())
    assert cache.get(tools, image, 64) == cache.get(tools, image, 64)
    assert tools.made == 1 and len(list(cache.folder.iterdir())) == 1

    monkeypatch.setenv("IMG_AGENT_THUMB_CACHE_MB", "0")
    cache = ThumbnailCache(tmp_path / "none")
    tools = _Tools(Settings())
    assert cache.get(tools, image, 64) == cache.get(tools, image, 64)
    assert tools.made == 2 and not cache.folder.exists()
