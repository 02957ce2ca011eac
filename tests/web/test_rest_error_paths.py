"""Every error path of the REST surface, in-process: the web listener's app (:func:`build_web_app`, guard
included) over a real engine, each refusal checked for its status and its ``{"error": {"type", "message"}}``
body with a message that says what to do. The paths that need a served store (a read-only mount, a real
port, the browser) are in the other ``test_rest_*`` modules; this one needs no service process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from img_agent import errors
from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.results import RemoveReport
from img_agent.testing import StubEncoder, make_images
from img_agent.tools.http_guard import is_loopback
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.sandbox import Sandbox
from img_agent.web import api_images
from img_agent.web import app as app_module
from img_agent.web.app import build_api, build_web_app
from img_agent.web.auth import COOKIE, WebGuard, allowed_hosts
from img_agent.web.deps import WebDeps
from img_agent.web.errors import AuthenticationError, RequestTooLargeError
from img_agent.web.models import ModelInfo
from img_agent.web.thumbs import ThumbnailCache

TOKEN = "t" * 43
BASE = "http://127.0.0.1:8765"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SIXTEEN_MIB = 16 * 1024 * 1024
DIM = 16


@dataclass
class Served:
    """The web listener's app over a real engine with 4 indexed images under ``images`` (the allowed folder)."""

    client: TestClient
    engine: Engine
    tools: ImageTools
    images: Path
    outside: Path

    def deps(self, **changes: object) -> WebDeps:
        values: dict = {"tools": lambda: self.tools,
                        "model": lambda: ModelInfo(name=self.engine.model, state="ready"), "llm_model": None,
                        "thumbs": ThumbnailCache(self.images.parent / "thumbs"), "token": TOKEN}
        return WebDeps(**{**values, **changes})


def index_files(engine: Engine, files: list[Path]) -> list[int]:
    """Index ``files`` under stub vectors, with the content hash and format a folder walk records."""
    vectors = np.random.default_rng(len(files)).standard_normal((len(files), DIM)).astype(np.float32)
    metadata = [{"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "format": Image.open(f).format}
                for f in files]
    return engine.add_vectors(vectors, [str(f) for f in files], metadata=metadata)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """No CLIP model is loaded: the images are indexed under stub vectors, and no test here encodes."""
    base = tmp_path_factory.mktemp("rest-errors")
    images, outside = base / "images", base / "outside"
    make_images(images, 4)
    make_images(outside, 1, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("IMG_AGENT_", "LLM_")):
                patch.delenv(key)
        patch.setenv("IMG_AGENT_CONFIG", str(base / "no-user-config.env"))
        settings = Settings(data_dir=base / "data", model="stub")
        with Engine.open(settings, encoder=StubEncoder(DIM)) as engine:
            assert index_files(engine, sorted(p for p in images.rglob("*") if p.is_file())) == [0, 1, 2, 3]
            tools = ImageTools(engine, Sandbox([images], max_file_bytes=settings.max_file_bytes))
            served = Served(None, engine, tools, images.resolve(), outside.resolve())  # type: ignore[arg-type]
            app = build_web_app(served.deps(), llm_configured=False)
            with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
                served.client = client
                yield served


def error(response: httpx.Response, status: int, kind: str, *says: str) -> str:
    """The message of a JSON error answer, after checking its status, shape and type."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["message", "type"], body
    assert body["error"]["type"] == kind, body
    message = body["error"]["message"]
    assert "Traceback" not in message and 'File "' not in message
    for text in says:
        assert text in message, (text, message)
    return message


def api_get(served: Served, path: str, **kwargs: object) -> httpx.Response:
    return served.client.get(path, headers={**BEARER, **kwargs.pop("headers", {})}, **kwargs)  # type: ignore[arg-type]


def api_post(served: Served, path: str, **kwargs: object) -> httpx.Response:
    return served.client.post(path, headers={**BEARER, **kwargs.pop("headers", {})}, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the error tree's statuses

TREE = [
    (errors.ConfigError, 400), (errors.InvalidInputError, 400), (errors.ImageDecodeError, 400),
    (errors.LLMNotConfiguredError, 400), (AuthenticationError, 401), (errors.AccessDeniedError, 403),
    (errors.NotFoundError, 404), (errors.BusyError, 409), (errors.StoreReadOnlyError, 409),
    (RequestTooLargeError, 413), (errors.LLMError, 502), (errors.LLMTimeoutError, 502),
    (errors.ModelLoadingError, 503), (errors.StoreWriteError, 507), (errors.ModelError, 500),
    (errors.StoreError, 500), (errors.StoreVersionError, 500), (errors.StoreCorruptError, 500),
    (errors.StoreInUseError, 500), (errors.VectorStoreError, 503), (errors.ModelMismatchError, 500),
    (errors.ServiceError, 500),
]


@pytest.mark.parametrize(("kind", "status"), TREE, ids=[kind.__name__ for kind, _ in TREE])
def test_each_error_of_the_tree_keeps_its_status_type_and_message(
        served: Served, monkeypatch: pytest.MonkeyPatch, kind: type[Exception], status: int) -> None:
    text = f"{kind.__name__} happened; do the thing it says."

    def failing() -> None:
        raise kind(text)

    monkeypatch.setattr(served.engine, "status", failing)
    answer = api_get(served, "/api/index/status")
    assert error(answer, status, kind.__name__) == text  # the error's own words, not the 'unexpected' text
    assert answer.headers.get("retry-after") == ("5" if kind is errors.ModelLoadingError else None)


# ----------------------------------------------------------------------------- routes, methods, bad requests

SERVICE_ONLY = [("GET", "/api/health"), ("GET", "/api/service"), ("POST", "/api/service/stop"),
                ("POST", "/api/service/web"), ("POST", "/api/store/backup"), ("POST", "/api/tools/index_status"),
                ("POST", "/api/tools/search_by_text/dispatch"), ("GET", "/nothing")]


def test_the_service_routes_are_not_on_the_web_listener_and_unknown_routes_are_json_404(served: Served) -> None:
    for method, path in SERVICE_ONLY:
        answer = served.client.request(method, path, headers=BEARER, json={})
        error(answer, 404, "NotFoundError", f"No such endpoint: {path}", "/api/docs")
    assert api_get(served, "/api/index/status").json()["live"] == 4  # the store is served, not stopped
    error(served.client.get("/static/no-such-file.js"), 404, "NotFoundError", "No such endpoint")  # no token needed


def test_a_wrong_method_is_a_json_405_naming_the_docs(served: Served) -> None:
    error(api_get(served, "/api/search"), 405, "InvalidInputError", "GET is not allowed on /api/search", "/api/docs")
    error(served.client.delete("/api/status", headers=BEARER), 405, "InvalidInputError", "DELETE is not allowed")
    error(api_post(served, "/static/app.js"), 405, "InvalidInputError", "POST is not allowed")


BAD_REQUESTS = [
    pytest.param("GET", "/api/images/abc", {}, 400, "InvalidInputError", "'path.image_id'", id="image-id-not-int"),
    pytest.param("GET", "/api/images/0/thumbnail?size=5", {}, 400, "InvalidInputError", "greater than or equal to 32",
                 id="thumbnail-too-small"),
    pytest.param("GET", "/api/images/0/thumbnail?size=1025", {}, 400, "InvalidInputError", "less than or equal to 1024",
                 id="thumbnail-too-large"),
    pytest.param("GET", "/api/images/0/similar?k=0", {}, 400, "InvalidInputError", "k must be 1-1000", id="similar-k"),
    pytest.param("GET", "/api/images/0/similar?offset=1000", {}, 400, "InvalidInputError", "offset 0-999",
                 id="similar-offset"),
    pytest.param("GET", "/api/tags?limit=0", {}, 400, "InvalidInputError", "'query.limit'", id="tags-limit"),
    pytest.param("POST", "/api/search/image", {"json": {"k": 3}}, 400, "InvalidInputError",
                 "'image_base64' is required", id="image-json-missing"),
    pytest.param("POST", "/api/search/image", {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
                 400, "InvalidInputError", "not valid JSON", id="image-json-invalid"),
    pytest.param("POST", "/api/search/image", {"files": {"other": ("a.png", b"x", "image/png")}}, 400,
                 "InvalidInputError", "multipart file field 'image'", id="multipart-without-image"),
    pytest.param("POST", "/api/search/image", {"data": {"image": "text"}, "files": {"x": ("x", b"x")}}, 400,
                 "InvalidInputError", "multipart file field 'image'", id="multipart-image-not-a-file"),
    pytest.param("POST", "/api/search/image", {"files": {"image": ("a.png", b"", "image/png")}}, 400,
                 "InvalidInputError", "empty", id="multipart-empty-file"),
    pytest.param("POST", "/api/search/image", {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
                 400, "InvalidInputError", "boundary", id="multipart-without-boundary"),
    pytest.param("POST", "/search", {"data": {"query": "x", "k": "0"}}, 400, "InvalidInputError", "'k'",
                 id="seed-k"),
    pytest.param("POST", "/search", {"files": {"image": ("a.png", b"", "image/png")}}, 400, "InvalidInputError",
                 "empty", id="seed-empty-file"),
    pytest.param("POST", "/api/search/expand", {"json": {"query": "x", "variants": 99}}, 400, "InvalidInputError",
                 "'variants'", id="expand-variants"),
    pytest.param("POST", "/api/chat", {"json": {"messages": []}}, 400, "InvalidInputError", "'messages'",
                 id="chat-no-messages"),
    pytest.param("POST", "/api/chat", {"json": {"messages": [{"role": "assistant", "content": "hi"}]}}, 400,
                 "InvalidInputError", "must be the user's", id="chat-last-not-user"),
    pytest.param("POST", "/api/index/remove", {"json": {}}, 400, "InvalidInputError", "ids and/or paths",
                 id="remove-nothing"),
    pytest.param("POST", "/api/index/add", {"content": b"[1,", "headers": {"Content-Type": "application/json"}},
                 400, "InvalidInputError", "not valid JSON", id="add-invalid-json"),
    pytest.param("POST", "/api/index/rebuild", {"json": {"index_string": 5}}, 400, "InvalidInputError",
                 "'index_string'", id="rebuild-bad-type"),
    pytest.param("POST", "/api/tools/call", {"json": {"name": "index_status", "x": 1}}, 400, "InvalidInputError",
                 "'x'", id="tool-call-extra-key"),
    pytest.param("POST", "/api/images/description", {"json": {"ids": [0], "description": "x", "clear": True}}, 400,
                 "InvalidInputError", "not both", id="description-and-clear"),
    pytest.param("POST", "/api/images/describe", {"json": {"limit": 1}}, 400, "LLMNotConfiguredError", "LLM_MODEL",
                 id="describe-without-llm"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "kind", "says"), BAD_REQUESTS)
def test_bad_requests_say_what_to_fix(served: Served, method: str, path: str, kwargs: dict, status: int, kind: str,
                                      says: str) -> None:
    headers = {**BEARER, **kwargs.pop("headers", {})}
    error(served.client.request(method, path, headers=headers, **kwargs), status, kind, says)


def test_multipart_errors_of_the_image_search(served: Served) -> None:
    image = ("q.png", min(served.images.rglob("*.png")).read_bytes(), "image/png")
    error(api_post(served, "/api/search/image", files={"image": image}, data={"where": "{nope"}), 400,
          "InvalidInputError", "'where' is not valid JSON", '"folder"')
    error(api_post(served, "/api/search/image", files={"image": image}, data={"k": "abc"}), 400,
          "InvalidInputError", "'k'", "/api/docs")
    error(api_post(served, "/api/search/image", files=[("image", image), ("image", image)]), 400,
          "InvalidInputError", "Maximum number of files is 1", "send it again (the endpoints and their bodies are at /api/docs)")


def test_a_missing_path_inside_the_roots_is_404(served: Served) -> None:
    missing = served.images / "no-such-folder"
    error(api_post(served, "/api/index/add", json={"paths": [str(missing)]}), 404, "NotFoundError",
          "No file or folder", "Check the path")


def test_an_image_over_16_mib_is_413_on_every_search_form(served: Served) -> None:
    big = b"\xff\xd8" + b"0" * SIXTEEN_MIB
    for path in ("/search", "/api/search/image"):
        error(api_post(served, path, files={"image": ("big.jpg", big, "image/jpeg")}), 413, "RequestTooLargeError",
              "larger than 16 MiB", "send a smaller one")
    encoded = "A" * (22 * 1024 * 1024)  # decodes to 16.5 MiB; under the server's body limit (22.3 MiB)
    error(api_post(served, "/api/search/image", json={"image_base64": encoded}), 413, "RequestTooLargeError",
          "image_base64 decodes to more than 16 MiB", "send a smaller image")


# ----------------------------------------------------------------------------- images, thumbnails, files


def test_a_file_swapped_for_a_link_outside_the_roots_is_403_then_gone_is_404(served: Served) -> None:
    target = min(p for p in served.outside.rglob("*") if p.is_file())
    victim = served.images / "swapped" / f"victim{target.suffix}"
    victim.parent.mkdir()
    shutil.copyfile(target, victim)
    [image_id] = index_files(served.engine, [victim])
    url = f"/api/images/{image_id}/thumbnail"
    try:
        shown = api_get(served, url, params={"size": 64})
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        tag = shown.headers["etag"]
        assert (served.images.parent / "thumbs" / f"{tag.strip(chr(34))}.jpg").is_file()  # cached
        for same in (tag, f"W/{tag}", "*", f'"other", {tag}'):
            assert api_get(served, url, params={"size": 64}, headers={"If-None-Match": same}).status_code == 304
        assert api_get(served, url, params={"size": 64}, headers={"If-None-Match": '"other"'}).status_code == 200

        victim.unlink()
        victim.symlink_to(target)  # the cached thumbnail must not be shown any more
        for answer in (api_get(served, url, params={"size": 64}),
                       api_get(served, url, params={"size": 64}, headers={"If-None-Match": tag}),
                       api_get(served, f"/api/images/{image_id}/file")):
            error(answer, 403, "AccessDeniedError", f"Image {image_id} is outside", "IMG_AGENT_IMAGE_ROOTS")

        victim.unlink()
        for answer in (api_get(served, url), api_get(served, f"/api/images/{image_id}/file")):
            error(answer, 404, "NotFoundError", "is gone", "remove the image")
    finally:
        served.engine.remove(ids=[image_id])


def test_a_delete_that_removes_nothing_is_404(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image removed between the lookup and the removal (another client was first)."""
    monkeypatch.setattr(api_images, "call_tool", lambda *_args: RemoveReport(not_found=["0"]))
    error(served.client.delete("/api/images/0", headers=BEARER), 404, "NotFoundError", "No live image has id 0",
          "search results")


def test_the_gallery_page_not_installed_is_a_json_404(served: Served, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(app_module, "STATIC", tmp_path)
    error(api_get(served, "/"), 404, "NotFoundError", "gallery page is not installed", "/api/docs")


# ----------------------------------------------------------------------------- jobs and the model


def test_a_cancelled_rebuild_job_keeps_the_old_index(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    real, started, release = served.engine.rebuild, threading.Event(), threading.Event()

    def gated(progress: object = None, index_string: str | None = None, cancel: object = None) -> object:
        started.set()
        release.wait(30)
        return real(progress=progress, index_string=index_string, cancel=cancel)

    monkeypatch.setattr(served.engine, "rebuild", gated)
    before = api_get(served, "/api/index/status").json()
    job = api_post(served, "/api/index/rebuild", json={"index_string": "Flat"}).json()["job"]
    try:
        assert started.wait(30) and job["kind"] == "rebuild"
        assert api_post(served, f"/api/jobs/{job['id']}/cancel").status_code == 200
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while (info := api_get(served, f"/api/jobs/{job['id']}").json())["state"] == "running":
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert info["state"] == "cancelled" and info["result"]["cancelled"] is True, info
    after = api_get(served, "/api/index/status").json()
    assert (after["generation"], after["index"]) == (before["generation"], before["index"])
    assert api_post(served, f"/api/jobs/{job['id']}/cancel").status_code == 200  # ended: nothing to refuse
    error(api_get(served, "/api/jobs/rebuild-0"), 404, "NotFoundError", "No job has id", "List jobs")


def test_the_llm_recipes_are_503_with_retry_after_while_the_model_loads(served: Served) -> None:
    loading = served.deps(model=lambda: ModelInfo(name=served.engine.model, state="loading"))
    with TestClient(build_api(loading), raise_server_exceptions=False) as api:
        for path, body in (("/api/search", {"query": "a red square", "expand": True}),
                           ("/api/search/rag", {"query": "a red square"}), ("/api/rag/qa", {"question": "what?"})):
            answer = api.post(path, json=body)
            error(answer, 503, "ModelLoadingError", "still loading", "retry")
            assert answer.headers["retry-after"] == "5"
        assert api.get("/api/status").json()["model"]["state"] == "loading"  # the status still answers


# ----------------------------------------------------------------------------- who gets in


def test_the_host_is_checked_before_the_token(served: Served) -> None:
    for host in ("", "evil.example", "127.0.0.1.evil.example:8765", "localhost:80x"):
        for headers in ({}, BEARER):
            error(served.client.get("/api/status", headers={**headers, "Host": host}), 400, "AccessDeniedError",
                  "DNS rebinding", "IMG_AGENT_HTTP_ALLOWED_HOSTS")
    assert api_get(served, "/api/status", headers={"Host": "localhost:1234"}).status_code == 200


def test_every_wrong_credential_is_a_json_401(served: Served) -> None:
    attempts = [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"},
                {"Authorization": f"Bearer {TOKEN}x"}, {"Cookie": f"{COOKIE}=nope"},
                {"Cookie": f'{COOKIE}="\\x"; ;;=='}]
    for headers in attempts:
        for method, path in (("GET", "/api/status"), ("POST", "/api/index/merge"), ("POST", "/static/app.js"),
                             ("POST", "/mcp")):
            answer = served.client.request(method, path, headers=headers)
            error(answer, 401, "AuthenticationError", "Authorization: Bearer <token>", "?token=")
            assert answer.headers["www-authenticate"] == "Bearer"
    error(served.client.get(f"/api/status?token={TOKEN}"), 401, "AuthenticationError")  # it logs in at / only
    page = served.client.get("/", headers={"Authorization": "Bearer nope"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert "img-agent web" in page.text
    assert served.client.get("/api/status", headers={"Cookie": f"{COOKIE}={TOKEN}"}).status_code == 200


def test_a_cookie_change_needs_this_servers_origin(served: Served) -> None:
    cookie = {"Cookie": f"{COOKIE}={TOKEN}"}
    body = {"ids": [1], "dry_run": True}
    for claimed in ({"Origin": "null"}, {"Referer": "http://evil.example/page"}, {"Origin": "https://127.0.0.1:8765"},
                    {"Origin": "http://127.0.0.1:8766"}, {"Origin": "http://evil.example", "Referer": f"{BASE}/"}):
        error(served.client.post("/api/index/remove", json=body, headers={**cookie, **claimed}), 403,
              "AccessDeniedError", "Cross-origin request refused", "Authorization: Bearer")
    error(served.client.delete("/api/images/0", headers=cookie), 403, "AccessDeniedError")  # before the 404 or a change
    assert served.client.post("/api/index/remove", json=body, headers={**cookie, "Origin": BASE}).status_code == 200
    assert api_get(served, "/api/images/0").status_code == 200


def test_a_non_loopback_address_still_needs_the_token_and_an_allowed_host(served: Served) -> None:
    import socket

    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and is_loopback("::1")
    for bound, host in (("192.0.2.7", "192.0.2.7:8765"), ("0.0.0.0", f"{socket.gethostname()}:8765")):
        guarded = WebGuard(build_api(served.deps(host=bound)), token=TOKEN, hosts=allowed_hosts(bound),
                           max_body=1024 * 1024)
        with TestClient(guarded, raise_server_exceptions=False) as api:
            error(api.get("/api/status", headers={"Host": host}), 401, "AuthenticationError")
            error(api.get("/api/status", headers={**BEARER, "Host": "evil.example"}), 400, "AccessDeniedError")
            assert api.get("/api/status", headers={**BEARER, "Host": host}).status_code == 200


def test_a_body_without_a_length_is_cut_off_at_the_limit(served: Served) -> None:
    """A chunked upload (no Content-Length) is counted as it arrives; past the limit it is a 413."""
    guarded = WebGuard(build_api(served.deps()), token=TOKEN, hosts=allowed_hosts("127.0.0.1"), max_body=64 * 1024)
    boundary = b"XyZ"

    def chunks() -> Iterator[bytes]:
        yield b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(20):
            yield b"0" * 8192

    with TestClient(guarded, base_url=BASE, raise_server_exceptions=False) as api:
        answer = api.post("/api/search/image", content=chunks(),
                          headers={**BEARER, "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})
        assert "content-length" not in {k.lower() for k in answer.request.headers}
        error(answer, 413, "RequestTooLargeError", "limit of this server", "send a smaller image")


def test_a_chunked_body_over_the_limit_is_413_wherever_it_is_parsed(served: Served) -> None:
    """JSON routes, the JSON image search and MCP all answer the guard's 413, not a parse error or a 500;
    a chunked body under the limit still reaches the route whole."""
    guarded = build_web_app(served.deps(), llm_configured=False)
    guarded.max_body = 64 * 1024

    def chunks(head: bytes, size: int) -> Iterator[bytes]:
        yield head
        for _ in range(size // 8192):
            yield b" " * 8192
        yield b"}"

    with TestClient(guarded, base_url=BASE, raise_server_exceptions=False) as api:
        for path, head in (("/api/search", b'{"query": "a red square"'), ("/api/index/add", b'{"paths": ["x"]'),
                           ("/api/search/image", b'{"image_base64": "AAAA"'),
                           ("/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"')):
            answer = api.post(path, content=chunks(head, 80 * 1024),
                              headers={**BEARER, "Content-Type": "application/json", "Accept": "application/json"})
            error(answer, 413, "RequestTooLargeError", "limit of this server")
        small = api.post("/api/tools/call", content=chunks(b'{"name": "index_status", "arguments": {}', 16 * 1024),
                         headers={**BEARER, "Content-Type": "application/json"})
        assert small.status_code == 200 and small.json()["live"] == 4, small.text


def test_a_file_that_is_no_longer_an_image_is_404_saying_to_reindex(served: Served) -> None:
    victim = served.images / "stale" / "was-an-image.png"
    victim.parent.mkdir()
    shutil.copyfile(min(p for p in served.images.rglob("*.png")), victim)
    [image_id] = index_files(served.engine, [victim])
    try:
        victim.write_bytes(b"not an image")
        error(api_get(served, f"/api/images/{image_id}/thumbnail", params={"size": 48}), 404, "NotFoundError",
              "no longer a readable image", "index its folder again", "remove the image")
    finally:
        served.engine.remove(ids=[image_id])


def test_a_bad_index_string_is_refused_before_a_job_starts(served: Served) -> None:
    jobs_before = api_get(served, "/api/jobs").json()
    for bad, says in (("Bogus,,", "Index string 'Bogus,,' is not accepted"), ("IVF20000000,Flat", "IVF20000000")):
        error(api_post(served, "/api/index/rebuild", json={"index_string": bad}), 400, "InvalidInputError", says)
    assert api_get(served, "/api/jobs").json() == jobs_before
