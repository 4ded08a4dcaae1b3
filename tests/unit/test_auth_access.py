"""Access control as callers see it: API keys, customer tokens, operator roles, tenants, rate limits, headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings

PASSWORD = "correct horse battery"


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(tmp_path, auth={"mode": "required", "jwt_secret": "x" * 40})
    app = create_app(settings, llm=ScriptedLLM(default_reply="OK"))
    async with app.router.lifespan_context(app):
        transport = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test")
        async with transport as client:
            yield app, client


async def _operator(app: FastAPI, username: str, role: str, tenant: str = "default") -> None:
    await app.state.services.access.accounts.create_operator(
        username=username, password=PASSWORD, role=role, tenant_id=tenant
    )


async def _login(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    resp = await client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_chat_needs_a_channel_key_in_required_mode(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = secured
    resp = await client.post("/v1/chat", json={"user_id": "u", "text": "hi"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    _, key = await app.state.services.access.accounts.create_key(tenant_id="default", channel="web", name="site")
    ok = await client.post("/v1/chat", json={"user_id": "u", "text": "hi"}, headers=_bearer(key))
    assert ok.status_code == 200 and ok.json()["reply"] == "OK"
    wrong_channel = await client.post(
        "/v1/chat", json={"user_id": "u", "text": "hi", "channel": "app"}, headers=_bearer(key)
    )
    assert wrong_channel.status_code == 403


async def test_keys_are_stored_hashed_and_rotation_revokes_the_old_one(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = secured
    await _operator(app, "root", "admin")
    admin = _bearer((await _login(client, "root"))["access_token"])
    created = (await client.post("/v1/admin/api-keys", json={"channel": "web", "name": "site"}, headers=admin)).json()
    key = created["key"]
    listed = (await client.get("/v1/admin/api-keys", headers=admin)).json()
    assert listed[0]["key"] is None and key not in repr(listed)
    rotated = (await client.post(f"/v1/admin/api-keys/{created['id']}/rotate", headers=admin)).json()
    old = await client.post("/v1/chat", json={"user_id": "u", "text": "hi"}, headers=_bearer(key))
    new = await client.post("/v1/chat", json={"user_id": "u", "text": "hi"}, headers=_bearer(rotated["key"]))
    assert old.status_code == 401 and new.status_code == 200


async def test_a_customer_token_cannot_read_another_session(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = secured
    alice = (await client.post("/v1/widget/session", json={})).json()
    bob = (await client.post("/v1/widget/session", json={})).json()
    assert alice["session_id"] != bob["session_id"]
    own = await client.get(f"/v1/sessions/{alice['session_id']}/messages", headers=_bearer(alice["token"]))
    assert own.status_code == 404 or own.status_code == 200  # not created until the first message
    other = await client.get(f"/v1/sessions/{alice['session_id']}/messages", headers=_bearer(bob["token"]))
    assert other.status_code == 404
    anonymous = await client.get(f"/v1/sessions/{alice['session_id']}/messages")
    assert anonymous.status_code == 401


async def test_widget_cannot_claim_another_customers_identity_in_required_mode(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = secured
    grant = (await client.post("/v1/widget/session", json={"user_id": "victim", "session_id": "abcdefgh1234"})).json()
    assert grant["user_id"] != "victim" and grant["session_id"] != "abcdefgh1234"


async def test_an_agent_cannot_change_configuration(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = secured
    await _operator(app, "agent1", "agent")
    agent = _bearer((await _login(client, "agent1"))["access_token"])
    put = await client.put("/v1/admin/config/sensitive-words", json={"words": ["foo"]}, headers=agent)
    assert put.status_code == 403 and put.json()["error"]["code"] == "forbidden"
    assert (await client.post("/v1/admin/users", json={}, headers=agent)).status_code in (403, 422)
    assert (await client.get("/v1/admin/config/sensitive-words", headers=agent)).status_code == 200


async def test_admin_config_change_takes_effect_and_is_audited(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = secured
    await _operator(app, "root", "admin")
    admin = _bearer((await _login(client, "root"))["access_token"])
    put = await client.put("/v1/admin/config/sensitive-words", json={"words": ["竞品鹿头"]}, headers=admin)
    assert put.status_code == 200
    _, key = await app.state.services.access.accounts.create_key(tenant_id="default", channel="*", name="k")
    reply = await client.post("/v1/chat", json={"user_id": "u", "text": "竞品鹿头好吗"}, headers=_bearer(key))
    assert "无法处理" in reply.json()["reply"]
    audit = (await client.get("/v1/admin/audit", headers=admin)).json()
    assert any(e["action"] == "config.sensitive_words" and e["actor"].startswith("operator:") for e in audit)


async def test_tenants_see_only_their_own_data(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = secured
    accounts = app.state.services.access.accounts
    _, key_a = await accounts.create_key(tenant_id="shop-a", channel="web", name="a")
    _, key_b = await accounts.create_key(tenant_id="shop-b", channel="web", name="b")
    session = (await client.post("/v1/chat", json={"user_id": "u", "text": "hi"}, headers=_bearer(key_a))).json()
    mine = await client.get(f"/v1/sessions/{session['session_id']}/messages", headers=_bearer(key_a))
    theirs = await client.get(f"/v1/sessions/{session['session_id']}/messages", headers=_bearer(key_b))
    assert mine.status_code == 200 and len(mine.json()["messages"]) == 2
    assert theirs.status_code == 404
    resumed = await client.post(
        "/v1/chat", json={"user_id": "u", "text": "hi", "session_id": session["session_id"]}, headers=_bearer(key_b)
    )
    assert resumed.status_code == 404
    await _operator(app, "viewer-b", "viewer", tenant="shop-b")
    viewer_b = _bearer((await _login(client, "viewer-b"))["access_token"])
    assert (await client.get("/v1/admin/analytics/overview", headers=viewer_b)).json() == {"sessions": 0}
    assert (await client.get("/v1/admin/users", headers=viewer_b)).status_code == 403


async def test_tokens_expire_refresh_and_die_with_a_role_change(secured: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = secured
    await _operator(app, "root", "admin")
    await _operator(app, "ann", "agent")
    admin = _bearer((await _login(client, "root"))["access_token"])
    ann = await _login(client, "ann")
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": ann["refresh_token"]})
    assert refreshed.status_code == 200
    # an access token is not a refresh token
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": ann["access_token"]})).status_code == 401
    users = (await client.get("/v1/admin/users", headers=admin)).json()
    ann_id = next(u["id"] for u in users if u["username"] == "ann")
    assert (await client.patch(f"/v1/admin/users/{ann_id}", json={"role": "viewer"}, headers=admin)).status_code == 200
    stale = await client.get("/v1/admin/config/sensitive-words", headers=_bearer(ann["access_token"]))
    assert stale.status_code == 401
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": ann["refresh_token"]})).status_code == 401
    wrong = await client.post("/v1/auth/login", json={"username": "ann", "password": "nope-nope-nope"})
    assert wrong.status_code == 401


async def test_open_mode_keeps_admin_open_only_until_the_first_account(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await client.get("/v1/admin/users")).status_code == 200
    await _operator(app, "root", "admin")
    assert (await client.get("/v1/admin/users")).status_code == 401


async def test_pages_carry_security_headers_and_errors_hide_internals(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    bad = await client.post("/v1/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and "Traceback" not in bad.text


async def test_over_the_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limit={"enabled": True, "per_customer": "2/minute"})
    app = create_app(settings, llm=ScriptedLLM(default_reply="OK"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            codes = [
                (await client.post("/v1/chat", json={"user_id": "greedy", "text": "hi"})).status_code for _ in range(3)
            ]
            limited = await client.post("/v1/chat", json={"user_id": "greedy", "text": "hi"})
            other = await client.post("/v1/chat", json={"user_id": "someone-else", "text": "hi"})
    assert codes == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 200
