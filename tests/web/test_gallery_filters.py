"""The gallery's filter panel in a real browser, and ``where`` on "more like this" over plain HTTP.

The served store holds the 12 generated images (JPEG and PNG, some in ``sub/``) plus six photos with
EXIF facts (camera, date taken, GPS near Paris or on either side of the antimeridian, other sizes) and
file modification times set around one day; some images get tags and descriptions before the page opens. Each filtered search in the page must show exactly the images an oracle computed from
the catalog records says meet the filter (all of them fit on one page).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
from playwright.sync_api import Page, Request, expect
from web_support import WEB_IMAGES, WebServer, start_web_server

from img_agent.testing.exif_photos import write_photo

QUERY = "a picture"
PARIS = {"lat": ((48, 1), (51, 1), (0, 1)), "lat_ref": "N", "lon": ((2, 1), (21, 1), (0, 1)), "lon_ref": "E"}
FIJI_EAST = {"lat": ((17, 1), (0, 1), (0, 1)), "lat_ref": "S", "lon": ((178, 1), (30, 1), (0, 1)), "lon_ref": "E"}
FIJI_WEST = {"lat": ((16, 1), (30, 1), (0, 1)), "lat_ref": "S", "lon": ((179, 1), (50, 1), (0, 1)), "lon_ref": "W"}
MODIFIED_DAY = "2020-03-11"
"""The UTC day the photos' file times are set around (the generated images keep today's)."""
PHOTOS = [  # name, camera, taken, GPS, size, file modification time (UTC)
    ("canon_2023.jpg", ("Canon", "EOS R5"), "2023:06:15 10:00:00", PARIS, (128, 96), "2020-03-10T23:59:30"),
    ("canon_2021.jpg", ("Canon", "EOS 5D"), "2021:06:15 10:00:00", None, (64, 48), "2020-03-11T00:00:00"),
    ("nikon_2023.jpg", ("NIKON CORPORATION", "D750"), "2023:02:01 09:30:00", PARIS, (128, 96), "2020-03-11T12:00:00"),
    ("plain.jpg", None, None, None, (64, 48), "2020-03-11T23:59:59"),
    ("fiji_east.jpg", None, None, FIJI_EAST, (48, 120), "2020-03-12T00:00:00"),
    ("fiji_west.jpg", None, None, FIJI_WEST, (64, 48), "2020-03-12T08:00:00"),
]


@dataclass(frozen=True)
class Store:
    web: WebServer
    catalog: dict[int, dict[str, Any]]
    """Every live image's record, by id."""

    def ids(self, **where: Any) -> set[int]:
        """The oracle: ids of the images meeting ``where``, checked field by field on the catalog records."""
        return {i for i, record in self.catalog.items() if meets(record, where)}

    def id_of(self, name: str) -> int:
        return next(i for i, record in self.catalog.items() if Path(record["path"]).name == name)


def _day(text: str, *, end: bool = False) -> float:
    day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def in_box(record: dict[str, Any], box: dict[str, float]) -> bool:
    lat, lon = record["gps_lat"], record["gps_lon"]
    if lat is None or lon is None or not box["min_lat"] <= lat <= box["max_lat"]:
        return False
    if box["min_lon"] <= box["max_lon"]:
        return box["min_lon"] <= lon <= box["max_lon"]
    return lon >= box["min_lon"] or lon <= box["max_lon"]  # across the antimeridian


def meets(record: dict[str, Any], where: dict[str, Any]) -> bool:
    tags = {tag.lower() for tag in record["tags"]}
    camera = f"{record['camera_make'] or ''} {record['camera_model'] or ''}".lower()
    taken = record["taken_at"]
    checks = {
        "folder": lambda v: record["path"].startswith(v.rstrip("/") + "/"),
        "formats": lambda v: record["format"] in v,
        "taken_after": lambda v: taken is not None and taken >= _day(v),
        "taken_before": lambda v: taken is not None and taken < _day(v, end=True),
        "camera": lambda v: v.lower() in camera,
        "modified_after": lambda v: record["mtime"] >= _day(v),
        "modified_before": lambda v: record["mtime"] < _day(v, end=True),
        "has_gps": lambda v: (record["gps_lat"] is not None) == v,
        "bbox": lambda v: in_box(record, v),
        "tags_any": lambda v: any(tag.lower() in tags for tag in v),
        "tags_all": lambda v: all(tag.lower() in tags for tag in v),
        "tags_none": lambda v: not any(tag.lower() in tags for tag in v),
        "description": lambda v: v.lower() in (record["description"] or "").lower(),
        "min_width": lambda v: record["width"] >= v,
        "min_height": lambda v: record["height"] >= v,
    }
    return all(checks[key](value) for key, value in where.items())


def _catalog(api: httpx.Client) -> dict[int, dict[str, Any]]:
    hits = api.post("/api/search", json={"query": QUERY, "k": 100}).json()["hits"]
    return {hit["id"]: hit for hit in hits}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with start_web_server(tmp_path_factory.mktemp("web-filters")) as web, \
            httpx.Client(base_url=web.base_url, headers=web.bearer, timeout=60) as api:
        photos = web.image_dir / "photos"
        modified = {}
        for seed, (name, camera, taken, gps, size, mtime) in enumerate(PHOTOS):
            exif = {"make": camera[0], "model": camera[1], "taken": taken} if camera else {}
            write_photo(photos / name, seed, size=size, **exif, **(gps or {}))
            modified[name] = datetime.fromisoformat(mtime).replace(tzinfo=timezone.utc).timestamp()
            os.utime(photos / name, (modified[name], modified[name]))
        added = api.post("/api/tools/call", json={"name": "add_images",
                                                  "arguments": {"paths": [str(photos)], "wait": True}})
        assert added.status_code == 200 and len(added.json()["added"]) == len(PHOTOS), added.text
        by_name = {Path(r["path"]).name: i for i, r in _catalog(api).items()}
        notes = [("tags", {"add": ["beach"]}, ["img_0000.jpg", "img_0002.png", "canon_2023.jpg"]),
                 ("tags", {"add": ["Family"]}, ["img_0002.png", "img_0008.png", "nikon_2023.jpg"]),
                 ("tags", {"add": ["screenshot"]}, ["img_0005.png", "img_0001.jpg"]),
                 ("description", {"description": "A red kite over the sea"}, ["img_0000.jpg", "nikon_2023.jpg"])]
        for kind, change, names in notes:
            response = api.post(f"/api/images/{kind}", json={"ids": [by_name[n] for n in names], **change})
            assert response.status_code == 200, response.text
        catalog = _catalog(api)
        assert len(catalog) == WEB_IMAGES + len(PHOTOS)
        assert {Path(r["path"]).name: r["mtime"] for r in catalog.values() if r["path"].startswith(str(photos))} \
            == modified
        yield Store(web, catalog)


@pytest.fixture(scope="module")
def page(store: Store) -> Iterator[Page]:
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(store.web.url)
        yield page
        context.close()
        assert errors == []


# ---------------------------------------------------------------------------------------- plain HTTP


def test_similar_takes_where_as_json_text_and_refuses_a_bad_one(store: Store) -> None:
    seed = store.id_of("img_0002.png")
    with httpx.Client(base_url=store.web.base_url, headers=store.web.bearer, timeout=30) as api:
        def similar(where: object) -> httpx.Response:
            text = where if isinstance(where, str) else json.dumps(where)
            return api.get(f"/api/images/{seed}/similar", params={"k": 100, "where": text})

        def ids(response: httpx.Response) -> set[int]:
            assert response.status_code == 200, response.text
            return {hit["id"] for hit in response.json()["hits"]}

        assert ids(api.get(f"/api/images/{seed}/similar", params={"k": 100})) == set(store.catalog) - {seed}
        pngs = store.ids(formats=["PNG"]) - {seed}
        assert 0 < len(pngs) < len(store.catalog) - 1
        assert ids(similar({"formats": ["png"]})) == pngs
        tagged = store.ids(tags_any=["family", "beach"], min_width=100)
        assert ids(similar({"tags_any": ["FAMILY", "beach"], "min_width": 100})) == tagged and tagged
        sub = str(store.web.image_dir / "sub")
        assert ids(similar({"folder": "sub"})) == store.ids(folder=sub) - {seed}  # relative: under the allowed folder

        for bad, status, says in [
            ('{"formats": ["PNG"', 400, "query parameter 'where' is not valid JSON"),
            ({"taken_after": "last week"}, 400, "taken_after must be an ISO 8601 date"),
            ({"colour": "red"}, 400, "colour"),
            ({"folder": "/etc"}, 403, "outside the allowed folders"),
        ]:
            response = similar(bad)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert says in error["message"] and error["type"], error


# ---------------------------------------------------------------------------------------- the page


def open_filters(page: Page) -> None:
    if not page.locator("#filters").evaluate("d => d.open"):
        page.locator("#filters summary").click()


def shown(page: Page) -> set[int]:
    settle(page)
    ids = card_ids(page)
    assert len(ids) == len(set(ids))
    return set(ids)


def summary(page: Page, count: int) -> None:
    expect(page.get_by_test_id("filter-summary")).to_have_text(
        f"· {count} filter{'' if count == 1 else 's'} active" if count else "· none")


def clear(page: Page) -> None:
    page.get_by_test_id("filters-clear").click()
    summary(page, 0)


@NEEDS_CHROMIUM
def test_text_image_and_similar_searches_show_only_what_the_filters_allow(page: Page, store: Store) -> None:
    web = store.web
    home(page, web.base_url)
    open_filters(page)
    summary(page, 0)
    page.locator("input[name=filter-format][value=PNG]").check()
    page.locator("#filter-tags-none").fill("Screenshot")
    summary(page, 2)
    expected = store.ids(formats=["PNG"], tags_none=["screenshot"])
    assert 1 < len(expected) < len(store.ids(formats=["PNG"]))

    search(page, QUERY)
    assert shown(page) == expected
    expect(page.locator("#query-label")).to_contain_text("(2 filters)")

    page.get_by_test_id("file-input").set_input_files(str(web.image_dir / "img_0000.jpg"))  # a JPEG: not allowed
    expect(page.locator("#query-label")).to_have_text("Images like img_0000.jpg (2 filters)")
    assert shown(page) == expected

    seed = min(expected)
    page.locator(f"[data-testid=result-card][data-id='{seed}'] [data-testid=more-like-this]").click()
    expect(page.locator("#query-label")).to_contain_text("More like")
    assert shown(page) == expected - {seed}

    clear(page)  # runs the current search again, unfiltered
    expect(page.locator("#query-label")).not_to_contain_text("filter")
    assert shown(page) == set(store.catalog) - {seed}


@NEEDS_CHROMIUM
def test_metadata_tag_and_score_filters_apply_by_button_and_by_enter(page: Page, store: Store) -> None:
    home(page, store.web.base_url)
    open_filters(page)
    search(page, QUERY)
    assert shown(page) == set(store.catalog)

    page.locator("#filter-camera").fill("canon")
    page.locator("#filter-taken-after").fill("2022-01-01")
    page.locator("#filter-gps").select_option("yes")
    summary(page, 3)
    page.get_by_test_id("filters-apply").click()
    expected = store.ids(camera="canon", taken_after="2022-01-01", has_gps=True)
    assert shown(page) == expected == {store.id_of("canon_2023.jpg")}

    clear(page)
    assert shown(page) == set(store.catalog)
    page.locator("#filter-min-width").fill("100")
    tags = page.locator("#filter-tags-any")
    tags.fill("beach,")
    expect(page.locator("#filter-tags-any-list option")).to_have_count(2)
    options = page.locator("#filter-tags-any-list option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(options) == ["beach, Family", "beach, screenshot"]  # the store's tags, after what was typed
    tags.fill("beach, family")
    tags.press("Enter")
    expected = store.ids(tags_any=["beach", "family"], min_width=100)
    assert shown(page) == expected and len(expected) == 2

    clear(page)
    page.locator("#filter-description").fill("KITE")
    page.locator("#filter-taken-before").fill("2023-03-01")
    page.locator("#filter-taken-before").press("Enter")
    assert shown(page) == store.ids(description="kite", taken_before="2023-03-01") == {store.id_of("nikon_2023.jpg")}

    clear(page)
    with httpx.Client(base_url=store.web.base_url, headers=store.web.bearer, timeout=30) as api:
        scores = sorted(h["score"] for h in api.post("/api/search", json={"query": QUERY, "k": 100}).json()["hits"])
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    cut = round(cut, 6)
    page.locator("#filter-min-score").fill(f"{cut:.6f}")
    page.get_by_test_id("filters-apply").click()
    assert shown(page) == {i for i, r in store.catalog.items() if r["score"] >= cut}
    assert 0 < len(shown(page)) < len(store.catalog)
    clear(page)
    assert shown(page) == set(store.catalog)


def fill_box(page: Page, south: str = "", west: str = "", north: str = "", east: str = "") -> None:
    for edge, value in (("south", south), ("west", west), ("north", north), ("east", east)):
        page.locator(f"#filter-bbox-{edge}").fill(value)


@NEEDS_CHROMIUM
def test_modified_dates_all_tags_height_and_gps_box_filters(page: Page, store: Store) -> None:
    def names(*files: str) -> set[int]:
        return {store.id_of(name) for name in files}

    home(page, store.web.base_url)
    open_filters(page)
    search(page, QUERY)
    assert shown(page) == set(store.catalog)

    page.locator("#filter-modified-after").fill(MODIFIED_DAY)
    page.locator("#filter-modified-before").fill(MODIFIED_DAY)
    summary(page, 2)
    page.get_by_test_id("filters-apply").click()
    expected = store.ids(modified_after=MODIFIED_DAY, modified_before=MODIFIED_DAY)
    assert shown(page) == expected == names("canon_2021.jpg", "nikon_2023.jpg", "plain.jpg")  # the day's edges
    expect(page.locator("#query-label")).to_contain_text("(2 filters)")

    clear(page)
    page.locator("#filter-tags-all").fill("beach, FAMILY")
    page.locator("#filter-tags-all").press("Enter")
    expected = store.ids(tags_all=["beach", "family"])
    assert shown(page) == expected == names("img_0002.png")
    assert expected < store.ids(tags_any=["beach", "family"])

    clear(page)
    page.locator("#filter-min-height").fill("90")
    page.locator("#filter-min-height").press("Enter")
    expected = store.ids(min_height=90)
    assert shown(page) == expected == names("canon_2023.jpg", "nikon_2023.jpg", "fiji_east.jpg")
    assert expected != store.ids(min_width=90)

    clear(page)
    fill_box(page, "48.5", "2", "49", "2.5")
    summary(page, 1)
    page.get_by_test_id("filters-apply").click()
    box = {"min_lat": 48.5, "min_lon": 2, "max_lat": 49, "max_lon": 2.5}
    assert shown(page) == store.ids(bbox=box) == names("canon_2023.jpg", "nikon_2023.jpg")
    expect(page.locator("#query-label")).to_contain_text("(1 filter)")

    fill_box(page, "-18", "178", "-16", "-179.5")  # West greater than East: across the antimeridian
    page.get_by_test_id("filters-apply").click()
    box = {"min_lat": -18, "min_lon": 178, "max_lat": -16, "max_lon": -179.5}
    assert shown(page) == store.ids(bbox=box) == names("fiji_east.jpg", "fiji_west.jpg")
    seed = store.id_of("fiji_east.jpg")
    page.locator(f"[data-testid=result-card][data-id='{seed}'] [data-testid=more-like-this]").click()
    expect(page.locator("#query-label")).to_contain_text("More like")
    assert shown(page) == names("fiji_west.jpg")

    fill_box(page, "-18", "-179.5", "-16", "178")  # the same edges the other way round: the rest of the world
    page.get_by_test_id("filters-apply").click()
    assert shown(page) == store.ids(bbox={"min_lat": -18, "min_lon": -179.5, "max_lat": -16, "max_lon": 178}) == set()
    expect(page.locator("#no-results")).to_be_visible()

    clear(page)
    page.locator("#filter-modified-after").fill("2020-01-01")
    page.locator("#filter-modified-before").fill("2020-12-31")
    page.locator("#filter-tags-all").fill("beach")
    page.locator("#filter-min-height").fill("40")
    fill_box(page, "-90", "-180", "90", "180")
    summary(page, 5)
    search(page, QUERY)
    where = {"modified_after": "2020-01-01", "modified_before": "2020-12-31", "tags_all": ["beach"], "min_height": 40,
             "bbox": {"min_lat": -90, "min_lon": -180, "max_lat": 90, "max_lon": 180}}
    assert shown(page) == store.ids(**where) == names("canon_2023.jpg")
    expect(page.locator("#query-label")).to_contain_text("(5 filters)")
    clear(page)  # empties every field: the count is taken from them
    assert shown(page) == set(store.catalog)


@NEEDS_CHROMIUM
def test_a_partly_filled_gps_box_is_refused_in_the_page(page: Page, store: Store) -> None:
    home(page, store.web.base_url)
    open_filters(page)
    searches: list[str] = []

    def record(request: Request) -> None:
        if "/api/search" in request.url or "/similar" in request.url:
            searches.append(request.url)

    page.on("request", record)
    try:
        fill_box(page, south="10", north="20")
        summary(page, 1)
        search(page, QUERY)
        message = page.get_by_test_id("message")
        expect(message).to_have_attribute("data-kind", "error")
        expect(message).to_have_text(
            "InvalidInputError: GPS box: give all four edges (South, West, North, East) or none; West, East are empty.")
        expect(page.get_by_test_id("result-card")).to_have_count(0)
        fill_box(page, "10", "20", "30")
        page.get_by_test_id("filters-apply").click()
        expect(message).to_contain_text("or none; East is empty.")
        expect(page.get_by_test_id("result-card")).to_have_count(0)
        assert searches == []
    finally:
        page.remove_listener("request", record)
    clear(page)
    expect(message).to_be_hidden()
    assert shown(page) == set(store.catalog)


@NEEDS_CHROMIUM
def test_a_bad_filter_shows_the_api_message_and_the_panel_fits_a_phone(page: Page, store: Store) -> None:
    home(page, store.web.base_url)
    open_filters(page)
    message = page.get_by_test_id("message")
    page.get_by_test_id("filters-apply").click()  # before any search: says when filters apply
    expect(message).to_contain_text("The filters apply to every search")
    page.locator("#filter-taken-after").focus()
    page.keyboard.type("05")  # the month only: the browser reads a half-typed date as empty
    summary(page, 1)
    search(page, QUERY)
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("Taken on or after: the value is incomplete or not a date")
    expect(page.get_by_test_id("result-card")).to_have_count(0)

    page.locator("#filter-taken-after").fill("2024-05-01")
    page.locator("#filter-taken-before").fill("2024-01-01")
    search(page, QUERY)
    expect(message).to_have_attribute("data-kind", "error")
    expect(message).to_contain_text("InvalidInputError: taken_after ('2024-05-01') is later than taken_before")
    expect(page.get_by_test_id("result-card")).to_have_count(0)
    clear(page)
    expect(message).to_be_hidden()
    assert shown(page) == set(store.catalog)

    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.locator("#filters summary").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#filters")).not_to_have_attribute("open", "")
        page.keyboard.press("Enter")
        expect(page.locator("#filter-folder")).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.locator("#filter-folder")).to_be_focused()
        page.locator("#filter-gps").focus()
        for edge in ("south", "west", "north", "east"):  # the box's edges in reading order, each on screen
            page.keyboard.press("Tab")
            expect(page.locator(f"#filter-bbox-{edge}")).to_be_focused()
            place = page.locator(f"#filter-bbox-{edge}").bounding_box()
            assert place and place["x"] >= 0 and place["x"] + place["width"] <= 390
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0
    finally:
        page.set_viewport_size(VIEWPORT)
