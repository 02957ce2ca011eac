"""The gallery page in a real browser (Debian's Chromium driven by Playwright) against a real service.

One browser per module; the pages share the module's served stores (``web_server`` from the web
conftest, and one served with the scripted fake LLM). The stores are this module's own, so the
tests that change them (remove, add) run after the read-only ones. A passing run with
``IMG_AGENT_SCREENSHOT=docs/gallery.png`` saves there the gallery screenshot the README shows (1280x800).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gallery_support import (
    ALL_THUMBS_LOADED,
    DROP_FILE,
    LLM_IMAGES,
    NEEDS_CHROMIUM,
    RECORD_EVENT_SOURCES,
    VIEWPORT,
    LLMWebServer,
    card_ids,
    chromium,
    home,
    search,
    serve_with_llm,
    settle,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect

from img_agent.testing import make_images
from img_agent.testing.fake_llm import FakeLLMServer

SCREENSHOT = os.environ.get("IMG_AGENT_SCREENSHOT")  # read at import: tests run with IMG_AGENT_* cleared
COOKIE = "img_agent_token"

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]

# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMWebServer]:
    llm = FakeLLMServer().start()
    try:
        with serve_with_llm(tmp_path_factory.mktemp("web-llm"), llm) as server:
            yield server
    finally:
        llm.close()


class Requests(list):
    """URLs a browser context requested, and ``errors``: uncaught script errors of its pages."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []


def _signed_in(browser: Browser, server, requests: Requests, **options) -> BrowserContext:
    context = browser.new_context(viewport=VIEWPORT, **options)
    context.on("request", lambda request: requests.append(request.url))
    context.on("page", lambda page: page.on("pageerror", lambda error: requests.errors.append(str(error))))
    context.add_init_script(RECORD_EVENT_SOURCES)
    page = context.new_page()
    page.goto(server.url)
    page.close()
    return context


@pytest.fixture(scope="module")
def requested() -> Requests:
    return Requests()


@pytest.fixture(scope="module")
def page(browser: Browser, web_server, requested: Requests) -> Iterator[Page]:
    """A signed-in page on ``web_server`` (no LLM)."""
    context = _signed_in(browser, web_server, requested)
    page = context.new_page()
    page.goto(web_server.base_url + "/")
    yield page
    context.close()


@pytest.fixture(scope="module")
def llm_page(browser: Browser, llm_server: LLMWebServer, requested: Requests) -> Iterator[Page]:
    """A signed-in page on the store served with the fake LLM."""
    context = _signed_in(browser, llm_server, requested)
    page = context.new_page()
    page.goto(llm_server.base_url + "/")
    yield page
    context.close()


@pytest.fixture(scope="module")
def screenshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where a test saves the gallery screenshot; copied to $IMG_AGENT_SCREENSHOT only when no test failed."""
    path = tmp_path_factory.mktemp("shot") / "gallery.png"
    yield path
    if SCREENSHOT and path.exists() and request.session.testsfailed == 0:
        shutil.copyfile(path, SCREENSHOT)


# ---------------------------------------------------------------------------------------- read-only tests


def test_token_url_sets_an_http_only_cookie_and_leaves_the_address_bar(browser: Browser, web_server) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(web_server.url)
        assert page.url == web_server.base_url + "/"
        assert "token" not in page.url
        cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
        assert cookie["value"] == web_server.token
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert COOKIE not in page.evaluate("document.cookie")
        expect(page.get_by_test_id("search-input")).to_be_visible()
    finally:
        context.close()


def test_without_the_token_the_page_says_where_to_get_it(browser: Browser, web_server) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(web_server.base_url + "/")
        assert response is not None and response.status == 401
        expect(page.locator("body")).to_contain_text("img-agent web")
        response = page.goto(web_server.base_url + "/?token=wrong")
        assert response is not None and response.status == 401
        assert context.cookies() == []
    finally:
        context.close()


def test_text_search_shows_lazy_thumbnails_that_load(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    search(page, "a colourful pattern")
    cards = page.get_by_test_id("result-card")
    expect(cards).to_have_count(12)
    assert page.locator("[data-testid=result-grid] img[loading=lazy]").count() == 12
    page.wait_for_function(ALL_THUMBS_LOADED, arg=4)
    first = cards.first
    score = first.get_by_test_id("result-score")
    first.hover()
    expect(score).to_be_visible()
    assert -1.0 <= float(score.inner_text()) <= 1.0
    expect(page.get_by_test_id("load-more")).to_be_hidden()


def test_no_llm_is_said_clearly(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    expect(page.locator("[data-testid=notice][data-kind=no-llm]")).to_contain_text("No LLM is configured")
    expect(page.locator("[data-testid=notice][data-kind=empty]")).to_have_count(0)


def test_dropped_image_finds_itself_first(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    image = sorted(web_server.image_dir.glob("*.jpg"))[1]
    page.evaluate(DROP_FILE, [base64.b64encode(image.read_bytes()).decode(), image.name, "image/jpeg"])
    settle(page)
    expect(page.locator("#query-label")).to_contain_text(image.name)
    first = page.get_by_test_id("result-card").first
    assert first.locator(".thumb").get_attribute("title").startswith(str(image))


def test_file_picker_searches_by_image(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    image = min(web_server.image_dir.glob("*.png"))
    page.get_by_test_id("file-input").set_input_files(str(image))
    settle(page)
    first = page.get_by_test_id("result-card").first
    assert first.locator(".thumb").get_attribute("title").startswith(str(image))


def test_more_like_this_from_a_card_and_from_the_detail_view(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    search(page, "stripes")
    seed = card_ids(page)[0]
    page.get_by_test_id("result-card").first.get_by_test_id("more-like-this").click()
    settle(page)
    expect(page.locator("#query-label")).to_contain_text("More like")
    similar = card_ids(page)
    assert similar and seed not in similar
    other = similar[0]
    page.get_by_test_id("result-card").first.locator(".thumb").click()
    detail = page.get_by_test_id("detail-view")
    expect(detail).to_be_visible()
    detail.get_by_test_id("more-like-this").click()
    settle(page)
    expect(detail).to_be_hidden()
    assert other not in card_ids(page)


def test_keyboard_tab_enter_and_escape(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    page.locator("h1").click()  # focus starts from the top of the page
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("search-input")).to_be_focused()
    page.keyboard.type("a picture")
    page.keyboard.press("Enter")
    settle(page)
    expect(page.get_by_test_id("result-card")).not_to_have_count(0)
    thumb = page.get_by_test_id("result-card").first.locator(".thumb")
    thumb.focus()
    outline = thumb.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    detail = page.get_by_test_id("detail-view")
    expect(detail).to_be_visible()
    expect(page.get_by_test_id("detail-path")).to_contain_text(str(web_server.image_dir))
    page.wait_for_function("() => document.querySelector('[data-testid=detail-image]').naturalWidth > 0")
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    expect(thumb).to_be_focused()


def test_phone_width_has_one_or_two_columns_and_no_horizontal_scroll(browser: Browser, web_server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(web_server.url)
        search(phone, "a picture")
        lefts = phone.get_by_test_id("result-card").evaluate_all(
            "cs => [...new Set(cs.map(c => Math.round(c.getBoundingClientRect().left)))]")
        assert 1 <= len(lefts) <= 2
        overflow = phone.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    finally:
        context.close()


def test_model_loading_is_said_and_the_search_retried(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    answers: list[int] = []

    def loading_once(route) -> None:
        if answers:
            answers.append(200)
            route.continue_()
            return
        answers.append(503)
        route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                      body='{"error": {"type": "ModelLoadingError", "message": "The model is loading; retry."}}')

    page.route("**/api/search", loading_once)
    try:
        page.get_by_test_id("search-input").fill("a picture")
        page.get_by_test_id("search-input").press("Enter")
        expect(page.locator("[data-testid=notice][data-kind=loading]")).to_contain_text("model is loading")
        settle(page)
        expect(page.get_by_test_id("result-card")).not_to_have_count(0)
        expect(page.locator("[data-testid=notice][data-kind=loading]")).to_have_count(0)
        assert answers == [503, 200]
    finally:
        page.unroute("**/api/search")


def test_an_empty_index_is_said_clearly(page: Page, web_server) -> None:
    def empty(route) -> None:
        status = route.fetch().json()
        status["index"]["live"] = 0
        route.fulfill(json=status)

    page.route("**/api/status", empty)
    try:
        home(page, web_server.base_url)
        expect(page.locator("[data-testid=notice][data-kind=empty]")).to_contain_text("The index is empty")
    finally:
        page.unroute("**/api/status")


def test_api_errors_show_in_the_message_area(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    page.get_by_test_id("index-path-input").fill("/no/such/folder/anywhere")
    page.get_by_test_id("index-add-button").click()
    message = page.get_by_test_id("message")
    expect(message).to_be_visible()
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("Error")


def test_api_refuses_no_token_wrong_host_and_cross_origin(web_server) -> None:
    base = web_server.base_url
    with httpx.Client(timeout=10) as http:
        response = http.get(f"{base}/api/status")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"
        assert http.get(f"{base}/api/status", headers=web_server.bearer).status_code == 200

        response = http.get(f"{base}/api/status", headers={**web_server.bearer, "Host": "evil.example"})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "AccessDeniedError"

        cookie = {"Cookie": f"{COOKIE}={web_server.token}"}
        body = {"query": "x"}
        response = http.post(f"{base}/api/search", json=body, headers={**cookie, "Origin": "http://evil.example"})
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "AccessDeniedError"
        assert http.post(f"{base}/api/search", json=body, headers=cookie).status_code == 403
        assert http.post(f"{base}/api/search", json=body, headers={**cookie, "Origin": base}).status_code == 200


# ---------------------------------------------------------------------------------------- with the fake LLM


def test_expanded_search_shows_variants_and_explanation(llm_page: Page, llm_server: LLMWebServer,
                                                        screenshot: Path) -> None:
    home(llm_page, llm_server.base_url)
    expect(llm_page.locator("[data-testid=notice][data-kind=no-llm]")).to_have_count(0)
    llm_server.llm.reply('["a striped pattern", "colourful gradient"]')
    llm_server.llm.reply("The top images are bold colour gradients with a block pattern.")
    llm_page.get_by_test_id("expand-toggle").check()
    search(llm_page, "colourful stripes")
    expect(llm_page.locator("#expansion-variants li")).to_have_count(3)
    expect(llm_page.locator("#expansion-variants")).to_contain_text("a striped pattern")
    expect(llm_page.locator("#expansion-explanation")).to_contain_text("bold colour gradients")
    expect(llm_page.get_by_test_id("result-card")).not_to_have_count(0)
    llm_page.wait_for_function(ALL_THUMBS_LOADED, arg=LLM_IMAGES)
    llm_page.get_by_test_id("result-card").first.hover()
    llm_page.screenshot(path=str(screenshot))
    llm_page.get_by_test_id("expand-toggle").uncheck()


def test_question_is_answered_with_cited_images(llm_page: Page, llm_server: LLMWebServer) -> None:
    home(llm_page, llm_server.base_url)
    llm_server.llm.reply('["striped picture", "gradient picture"]')
    llm_server.llm.reply("The stripes are in image [2], a gradient is in [1].")
    llm_page.get_by_test_id("qa-input").fill("Which image has stripes?")
    llm_page.get_by_test_id("qa-button").click()
    expect(llm_page.get_by_test_id("qa-answer")).to_contain_text("The stripes are in image [2]")
    sources = llm_page.get_by_test_id("qa-source")
    expect(sources.first).to_be_visible()
    expect(llm_page.locator("[data-testid=qa-source].cited")).to_have_count(2)
    sources.nth(1).locator("button").click()
    expect(llm_page.get_by_test_id("detail-view")).to_be_visible()
    llm_page.keyboard.press("Escape")


# ---------------------------------------------------------------------------------------- changes to the stores


def test_remove_needs_confirmation_and_the_image_leaves_search(page: Page, web_server) -> None:
    home(page, web_server.base_url)
    live = int(page.get_by_test_id("status-live").inner_text())
    search(page, "a picture")
    victim = card_ids(page)[0]
    page.locator(f"[data-testid=result-card][data-id='{victim}'] .thumb").click()
    page.get_by_test_id("detail-remove").click()
    confirm = page.get_by_test_id("confirm-dialog")
    expect(confirm).to_be_visible()
    page.get_by_test_id("confirm-no").click()
    expect(confirm).to_be_hidden()
    expect(page.get_by_test_id("detail-view")).to_be_visible()
    page.get_by_test_id("detail-remove").click()
    page.get_by_test_id("confirm-yes").click()
    expect(page.get_by_test_id("detail-view")).to_be_hidden()
    expect(page.locator(f"[data-testid=result-card][data-id='{victim}']")).to_have_count(0)
    expect(page.get_by_test_id("status-live")).to_have_text(str(live - 1))
    search(page, "a picture")
    assert victim not in card_ids(page)


def test_add_a_folder_with_live_progress(page: Page, web_server) -> None:
    folder = web_server.image_dir / "added"
    make_images(folder, 3, seed=42)
    home(page, web_server.base_url)
    live = int(page.get_by_test_id("status-live").inner_text())
    page.get_by_test_id("index-path-input").fill(str(folder))
    page.get_by_test_id("index-add-button").click()
    progress = page.get_by_test_id("job-progress")
    expect(progress).to_have_attribute("data-state", "done", timeout=60_000)
    expect(progress).to_contain_text("Done")
    expect(page.get_by_test_id("status-live")).to_have_text(str(live + 3))
    streams = page.evaluate("window.__eventSources")
    assert any("/api/jobs/" in url and url.endswith("/events") for url in streams), streams


def test_the_page_requests_nothing_from_elsewhere_and_raised_no_script_error(requested: Requests) -> None:
    assert requested
    assert requested.errors == []
    outside = [url for url in requested if not url.startswith(("http://127.0.0.1:", "data:"))]
    assert outside == []
