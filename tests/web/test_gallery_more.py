"""The gallery page in a real browser over a store larger than one page of results: paging with
"Load more", the path filters, and merging the buffer from the index panel.

The store is this module's own; the merge test changes it and runs last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from gallery_support import (
    NEEDS_CHROMIUM,
    VIEWPORT,
    card_ids,
    chromium,
    home,
    search,
    settle,
)
from playwright.sync_api import Locator, Page, expect
from web_support import WebServer, start_web_server

from img_agent.testing import make_images

IMAGES = 45
PAGE = 40
"""Results the page asks for at a time."""

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with start_web_server(tmp_path_factory.mktemp("web-big"), images=IMAGES, seed=3) as server:
        yield server


@pytest.fixture(scope="module")
def page(big_store: WebServer) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(big_store.url)
        yield page
        context.close()


def card_paths(page: Page) -> list[str]:
    titles = page.locator("[data-testid=result-card] .thumb").evaluate_all("ts => ts.map(t => t.title)")
    return [title.split("\n")[0] for title in titles]


def filter_search(page: Page, text: str, *, folder: str = "", glob: str = "") -> None:
    filters = page.locator("details.filters")
    if not filters.evaluate("d => d.open"):
        filters.locator("summary").click()
    page.locator("#filter-folder").fill(folder)
    page.locator("#filter-glob").fill(glob)
    search(page, text)


def test_load_more_appends_the_next_page_until_none_is_left(page: Page, big_store: WebServer) -> None:
    home(page, big_store.base_url)
    search(page, "a colourful pattern")
    cards, more = page.get_by_test_id("result-card"), page.get_by_test_id("load-more")
    expect(cards).to_have_count(PAGE)
    expect(more).to_be_visible()
    first_page = card_ids(page)
    more.click()
    expect(cards).to_have_count(IMAGES)
    settle(page)
    expect(more).to_be_hidden()
    ids = card_ids(page)
    assert ids[:PAGE] == first_page  # appended, not replaced
    assert len(set(ids)) == IMAGES


def test_folder_and_glob_narrow_the_results(page: Page, big_store: WebServer) -> None:
    folder = big_store.image_dir
    in_sub = sorted(str(p) for p in (folder / "sub").iterdir())
    pngs = sorted(str(p) for p in folder.rglob("*.png"))
    assert 0 < len(in_sub) < PAGE and 0 < len(pngs) < PAGE
    home(page, big_store.base_url)
    filter_search(page, "a picture", folder=str(folder / "sub"))
    expect(page.get_by_test_id("result-card")).to_have_count(len(in_sub))
    assert sorted(card_paths(page)) == in_sub
    filter_search(page, "a picture", glob="*.png")
    expect(page.get_by_test_id("result-card")).to_have_count(len(pngs))
    assert sorted(card_paths(page)) == pngs
    filter_search(page, "a picture", folder=str(folder / "sub"), glob="*.PNG")
    assert sorted(card_paths(page)) == sorted(set(in_sub) & set(pngs))
    filter_search(page, "a picture")
    expect(page.get_by_test_id("result-card")).to_have_count(PAGE)


def main_and_buffer(page: Page) -> Locator:
    return page.locator("#status-facts dt", has_text="Main / buffer").locator("xpath=following-sibling::dd[1]")


def test_merge_moves_the_buffer_into_the_main_index_and_the_panel_says_so(page: Page, big_store: WebServer) -> None:
    folder = big_store.image_dir / "later"
    make_images(folder, 3, seed=11)
    with httpx.Client(base_url=big_store.base_url, headers=big_store.bearer, timeout=60) as api:
        job = api.post("/api/index/add", json={"paths": [str(folder)]}).json()["job"]
        deadline = time.monotonic() + 60
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            job = api.get(f"/api/jobs/{job['id']}").json()
        assert job["state"] == "done", job
        index = api.get("/api/index/status").json()
    main, buffer = index["main"], index["buffer"]
    assert buffer >= 3
    home(page, big_store.base_url)
    expect(main_and_buffer(page)).to_have_text(f"{main} / {buffer}")
    page.get_by_test_id("merge-button").click()
    expect(main_and_buffer(page)).to_have_text(f"{main + buffer} / 0")
    message = page.get_by_test_id("message")
    expect(message).to_have_attribute("data-kind", "info")
    expect(message).to_contain_text(f"Merged {buffer} images")
    expect(page.get_by_test_id("status-live")).to_have_text(str(IMAGES + 3))


def test_a_long_add_is_cancelled_from_the_page_and_keeps_what_it_added(page: Page, big_store: WebServer) -> None:
    folder = big_store.image_dir / "many"
    make_images(folder, 400, seed=17)
    home(page, big_store.base_url)
    live = int(page.get_by_test_id("status-live").inner_text())
    page.get_by_test_id("index-path-input").fill(str(folder))
    page.get_by_test_id("index-add-button").click()
    progress = page.get_by_test_id("job-progress")
    expect(progress).to_have_attribute("data-state", "running")
    page.get_by_test_id("job-cancel").click()
    expect(progress).to_have_attribute("data-state", "cancelled", timeout=60_000)
    expect(progress).to_contain_text("Cancelled")
    expect(page.get_by_test_id("job-cancel")).to_be_hidden()
    with httpx.Client(base_url=big_store.base_url, headers=big_store.bearer, timeout=60) as api:
        [job] = [j for j in api.get("/api/jobs").json() if j["kind"] == "add" and str(folder) in j["description"]]
        added = len(job["result"]["added"])
        assert job["state"] == "cancelled" and job["result"]["cancelled"] and added < 400, job
        assert api.get("/api/index/status").json()["live"] == live + added  # what it added stays
    expect(page.get_by_test_id("status-live")).to_have_text(str(live + added))


def test_a_rebuild_from_the_page_streams_to_done(page: Page, big_store: WebServer) -> None:
    home(page, big_store.base_url)
    page.get_by_test_id("rebuild-button").click()
    progress = page.get_by_test_id("job-progress")
    expect(progress).to_have_attribute("data-state", "done", timeout=60_000)
    with httpx.Client(base_url=big_store.base_url, headers=big_store.bearer, timeout=60) as api:
        [job] = [j for j in api.get("/api/jobs").json() if j["kind"] == "rebuild"]
        assert job["state"] == "done" and not job["result"]["cancelled"], job
        status = api.get("/api/index/status").json()
    assert status["buffer"] == 0 and status["deleted"] == 0
    expect(main_and_buffer(page)).to_have_text(f"{status['main']} / 0")
