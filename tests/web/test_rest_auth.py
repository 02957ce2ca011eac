"""Who gets in, over real HTTP to a real service: token, cookie, Host and Origin checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from web_support import WebServer

pytestmark = pytest.mark.slow


def _error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]


def test_api_needs_the_token(web_server: WebServer) -> None:
    none = httpx.get(f"{web_server.base_url}/api/status")
    assert none.status_code == 401 and _error(none)["type"] == "AuthenticationError"
    assert "Authorization: Bearer" in _error(none)["message"] and none.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{web_server.base_url}/api/status", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    ok = httpx.get(f"{web_server.base_url}/api/status", headers=web_server.bearer)
    assert ok.status_code == 200 and ok.json()["index"]["live"] == 12


def test_mcp_needs_the_token(web_server: WebServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    refused = httpx.post(f"{web_server.base_url}/mcp", json=body)
    assert refused.status_code == 401 and _error(refused)["type"] == "AuthenticationError"


def test_foreign_host_is_refused_even_with_the_token(web_server: WebServer) -> None:
    refused = httpx.get(f"{web_server.base_url}/api/status", headers={**web_server.bearer, "Host": "evil.example"})
    assert refused.status_code == 400 and _error(refused)["type"] == "AccessDeniedError"
    assert "DNS rebinding" in _error(refused)["message"]
    port = web_server.base_url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(f"{web_server.base_url}/api/status", headers={**web_server.bearer, "Host": host}).status_code == 200


def test_the_token_url_sets_a_strict_cookie(web_server: WebServer) -> None:
    with httpx.Client(base_url=web_server.base_url) as http:
        page = http.get("/")
        assert page.status_code == 401 and "img-agent web" in page.text and "text/html" in page.headers["content-type"]
        wrong = http.get("/?token=nope")
        assert wrong.status_code == 401 and "wrong" in wrong.text
        login = http.get(f"/?token={web_server.token}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"img_agent_token={web_server.token}")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
        assert http.get("/api/status").status_code == 200  # the cookie authenticates
        assert http.get("/").status_code in (200, 404)  # the gallery, or a JSON 404 while it is not installed


def test_static_files_need_no_token(web_server: WebServer) -> None:
    missing = httpx.get(f"{web_server.base_url}/static/no-such-file.js")
    assert missing.status_code == 404


def test_cookie_changes_need_the_own_origin(web_server: WebServer) -> None:
    own = web_server.base_url
    cookies = {"img_agent_token": web_server.token}
    body = {"ids": [1], "dry_run": True}
    with httpx.Client(base_url=own, cookies=cookies) as http:
        cross = http.post("/api/index/remove", json=body, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and _error(cross)["type"] == "AccessDeniedError"
        other_port = http.post("/api/index/remove", json=body, headers={"Origin": "http://127.0.0.1:1"})
        assert other_port.status_code == 403
        no_origin = http.post("/api/index/remove", json=body)
        assert no_origin.status_code == 403
        same = http.post("/api/index/remove", json=body, headers={"Origin": own})
        assert same.status_code == 200 and same.json()["dry_run"] is True
        by_referer = http.post("/api/index/remove", json=body, headers={"Referer": f"{own}/?q=x"})
        assert by_referer.status_code == 200
        assert http.get("/api/index/status").status_code == 200  # reads need no Origin


def test_bearer_changes_need_no_origin(web_server: WebServer) -> None:
    answer = httpx.post(f"{web_server.base_url}/api/index/remove", json={"ids": [1], "dry_run": True},
                        headers=web_server.bearer)
    assert answer.status_code == 200 and answer.json()["removed"]
