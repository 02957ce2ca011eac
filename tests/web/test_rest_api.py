"""The REST API over real HTTP to a real service: every seed endpoint, errors, images, thumbnails, MCP."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from img_agent.tools import TOOL_NAMES

if TYPE_CHECKING:
    from web_support import WebServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(web_server: WebServer):  # noqa: ANN201 - an httpx.Client
    with httpx.Client(base_url=web_server.base_url, headers=web_server.bearer, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int, kind: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    if kind is not None:
        assert error["type"] == kind, error
    assert "Traceback" not in error["message"]
    return error["message"]


def _image_bytes(web_server: WebServer) -> bytes:
    return next(p for p in sorted(web_server.image_dir.rglob("*.png"))).read_bytes()


def test_every_seed_endpoint_answers(api: httpx.Client, web_server: WebServer) -> None:
    """The seed's 14 endpoints; without an LLM the LLM ones answer plainly or say that none is configured."""
    answers = {
        "/search": api.post("/search", data={"query": "a red square", "k": "5"}),
        "/api/search": api.post("/api/search", json={"query": "a red square", "k": 5}),
        "/api/search/rag": api.post("/api/search/rag", json={"query": "a red square", "k": 5}),
        "/api/search/expand": api.post("/api/search/expand", json={"query": "a red square"}),
        "/api/rag/qa": api.post("/api/rag/qa", json={"question": "what is red?", "k": 3}),
        "/api/chat": api.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}),
        "/api/tools": api.get("/api/tools"),
        "/api/tools/call": api.post("/api/tools/call", json={"name": "index_status", "arguments": {}}),
        "/api/index/status": api.get("/api/index/status"),
        "/api/index/add": api.post("/api/index/add", json={"paths": [str(web_server.image_dir)]}),
        "/api/index/remove": api.post("/api/index/remove", json={"ids": [1], "dry_run": True}),
        "/api/index/merge": api.post("/api/index/merge"),
        "/api/index/rebuild": api.post("/api/index/rebuild", json={"index_string": "Flat"}),
        "/api/status": api.get("/api/status"),
    }
    wrong = {p: (r.status_code, r.text[:300]) for p, r in answers.items() if r.status_code != 200 and p != "/api/chat"}
    assert not wrong, wrong
    assert "LLM" in _error(answers["/api/chat"], 400, "LLMNotConfiguredError")
    assert len(answers["/search"].json()["hits"]) == 5
    assert answers["/api/search/rag"].json()["llm_used"] is False
    assert answers["/api/search/expand"].json()["expanded_queries"] == ["a red square"]
    assert answers["/api/rag/qa"].json()["answer"] is None
    assert [t["function"]["name"] for t in answers["/api/tools"].json()] == list(TOOL_NAMES)
    assert answers["/api/index/add"].json()["job"]["kind"] == "add"
    assert answers["/api/index/rebuild"].json()["job"]["kind"] == "rebuild"
    status = answers["/api/status"].json()
    assert status["model"]["state"] in ("loading", "ready") and status["llm"] == {"configured": False, "model": None}
    assert status["roots"] == [str(web_server.image_dir)] and status["read_only"] is False


def test_search_pages(api: httpx.Client) -> None:
    first = api.post("/api/search", json={"query": "a blue circle", "k": 5}).json()
    second = api.post("/api/search", json={"query": "a blue circle", "k": 5, "offset": 5}).json()
    last = api.post("/api/search", json={"query": "a blue circle", "k": 5, "offset": 10}).json()
    ids = [h["id"] for page in (first, second, last) for h in page["hits"]]
    assert len(ids) == 12 == len(set(ids))
    assert first["has_more"] and second["has_more"] and not last["has_more"]
    assert [h["rank"] for h in second["hits"]] == [6, 7, 8, 9, 10]
    plain = api.post("/api/search", json={"query": "a blue circle", "k": 5, "expand": True}).json()
    assert plain["expanded_queries"] == ["a blue circle"] and plain["notes"]  # no LLM: says so


def test_search_by_uploaded_image(api: httpx.Client, web_server: WebServer) -> None:
    data = _image_bytes(web_server)
    upload = api.post("/api/search/image", files={"image": ("q.png", data, "image/png")}, data={"k": "3"})
    assert upload.status_code == 200, upload.text
    as_json = api.post("/api/search/image", json={"image_base64": base64.b64encode(data).decode(), "k": 3})
    seed = api.post("/search", files={"image": ("q.png", data, "image/png")}, data={"k": "3"})
    ids = [[h["id"] for h in r.json()["hits"]] for r in (upload, as_json, seed)]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 3
    assert upload.json()["hits"][0]["score"] > 0.99  # the image itself


def test_upload_errors(api: httpx.Client) -> None:
    text = api.post("/api/search/image", files={"image": ("x.png", b"not an image at all", "image/png")})
    assert "JPEG, PNG or WebP" in _error(text, 400, "ImageDecodeError")
    _error(api.post("/api/search/image", json={"image_base64": "!!!"}), 400, "ImageDecodeError")
    big = b"\xff\xd8" + b"0" * (16 * 1024 * 1024 + 10)
    assert "smaller" in _error(api.post("/api/search/image", files={"image": ("big.jpg", big, "image/jpeg")}), 413,
                               "RequestTooLargeError")
    huge = base64.b64encode(b"0" * (17 * 1024 * 1024)).decode()
    _error(api.post("/api/search/image", json={"image_base64": huge}), 413, "RequestTooLargeError")
    _error(api.post("/search", data={"k": "3"}), 400, "InvalidInputError")


def test_bad_requests_are_400_with_what_to_fix(api: httpx.Client) -> None:
    not_json = api.post("/api/search", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "not valid JSON" in _error(not_json, 400, "InvalidInputError")
    too_many = _error(api.post("/api/search", json={"query": "x", "k": 5000}), 400, "InvalidInputError")
    assert "'k'" in too_many and "/api/docs" in too_many
    assert "'query' is required" in _error(api.post("/api/search", json={}), 400)
    assert "'bogus'" in _error(api.post("/api/index/add", json={"paths": ["x"], "bogus": 1}), 400)
    assert "Unknown tool" in _error(api.post("/api/tools/call", json={"name": "rm_rf"}), 400, "UnknownToolError")
    assert "Invalid arguments" in _error(api.post("/api/tools/call", json={"name": "search_by_text",
                                                                            "arguments": {"k": 3}}), 400)
    _error(api.get("/api/images/1/thumbnail", params={"size": 5000}), 400)


def test_paths_outside_the_roots_are_403(api: httpx.Client) -> None:
    assert "outside the allowed folders" in _error(api.post("/api/index/add", json={"paths": ["/etc"]}), 403,
                                                   "AccessDeniedError")
    _error(api.post("/api/index/remove", json={"paths": ["/etc/passwd"]}), 403, "AccessDeniedError")
    _error(api.post("/api/tools/call", json={"name": "search_by_image", "arguments": {"path": "/etc/hostname"}}),
           403, "AccessDeniedError")


def test_unknown_ids_and_routes_are_404(api: httpx.Client) -> None:
    for path in ("/api/images/99999", "/api/images/99999/thumbnail", "/api/images/99999/file",
                 "/api/images/99999/similar", "/api/jobs/add-999", "/api/jobs/add-999/events", "/api/nothing"):
        _error(api.get(path), 404, "NotFoundError")
    _error(api.delete("/api/images/99999"), 404, "NotFoundError")
    _error(api.post("/api/jobs/add-999/cancel"), 404, "NotFoundError")


def test_image_record_file_and_thumbnail(api: httpx.Client, web_server: WebServer) -> None:
    from PIL import Image

    hit = api.post("/api/search", json={"query": "anything", "k": 1}).json()["hits"][0]
    record = api.get(f"/api/images/{hit['id']}").json()
    assert record["path"] == hit["path"] and record["thumbnail_url"] == f"/api/images/{hit['id']}/thumbnail"
    original = api.get(record["file_url"])
    assert original.status_code == 200 and original.content == open(hit["path"], "rb").read()
    assert original.headers["content-type"] == {"JPEG": "image/jpeg", "PNG": "image/png"}[hit["format"]]
    thumb = api.get(record["thumbnail_url"], params={"size": 64})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["etag"] == f'"{hit["sha256"]}-64"' and "max-age" in thumb.headers["cache-control"]
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 64
    assert (web_server.data_dir / "thumbs" / f"{hit['sha256']}-64.jpg").is_file()
    again = api.get(record["thumbnail_url"], params={"size": 64}, headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304 and not again.content
    cached = api.get(record["thumbnail_url"], params={"size": 64})
    assert cached.content == thumb.content
    similar = api.get(f"/api/images/{hit['id']}/similar", params={"k": 4}).json()
    assert len(similar["hits"]) == 4 and hit["id"] not in [h["id"] for h in similar["hits"]]


def test_openapi_lists_the_endpoints(api: httpx.Client) -> None:
    schema = api.get("/api/openapi.json").json()
    for path in ("/api/search", "/api/search/image", "/api/images/{image_id}/thumbnail", "/api/index/add",
                 "/api/jobs/{job_id}/events", "/api/chat", "/api/tools/call", "/search"):
        assert path in schema["paths"], path
    assert "application/json" in schema["paths"]["/api/search/image"]["post"]["requestBody"]["content"]
    assert api.get("/api/docs").status_code == 200


def test_mcp_over_the_web_listener(web_server: WebServer) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    async def session() -> None:
        with anyio.fail_after(60):
            await talk()

    async def talk() -> None:
        async with create_mcp_http_client(headers=web_server.bearer) as http, \
                streamable_http_client(f"{web_server.base_url}/mcp", http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as mcp:
            await mcp.initialize()
            assert [t.name for t in (await mcp.list_tools()).tools] == list(TOOL_NAMES)
            found = await mcp.call_tool("search_by_text", {"query": "a red square", "k": 2, "thumbnails": 0})
            assert not found.is_error and len(found.structured_content["hits"]) == 2
            refused = await mcp.call_tool("add_images", {"paths": ["/etc"]})
            assert refused.is_error  # the web client's folders apply on /mcp too

    anyio.run(session)


def test_api_docs_page_is_offline_and_generated_from_the_schema(web_server: WebServer) -> None:
    page = httpx.get(f"{web_server.base_url}/api/docs", headers=web_server.bearer, timeout=30)
    assert page.status_code == 200 and "/static/docs.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "").split("<body>")[0]  # no external scripts or styles
    script = httpx.get(f"{web_server.base_url}/static/docs.js", timeout=30)
    assert script.status_code == 200 and "/api/openapi.json" in script.text
