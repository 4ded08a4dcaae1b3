"""The agent console API as agents and customers see it: queue, claim, reply, close, suggestions, live sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from kefu.api.app import create_app
from kefu.config import Settings
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings
from tests.support.live_server import live_server

PASSWORD = "correct horse battery"
BOT_ANSWER = "您好，订单一般 48 小时内发货。"
WITHIN_SUPPORT_HOURS = "2026-03-02T10:00:00+08:00"
"""The demo shop's agents work 09:00-21:00 Shanghai time; outside them the handoff notice differs."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, dialogue={"now": WITHIN_SUPPORT_HOURS})


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def ask(client: httpx.AsyncClient, text: str, session_id: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"user_id": "customer-1", "text": text}
    if session_id:
        payload["session_id"] = session_id
    resp = await client.post("/v1/chat", json=payload)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def hand_off(client: httpx.AsyncClient) -> tuple[str, str]:
    """A customer asks for a person; returns (session id, ticket id)."""
    body = await ask(client, "转人工")
    assert body["handoff"] is True and "排在第 1 位" in body["reply"]
    [ticket] = (await client.get("/v1/console/queue")).json()
    return body["session_id"], ticket["id"]


async def test_a_handoff_reaches_the_queue_with_its_summary_and_transcript(client: httpx.AsyncClient) -> None:
    body = await ask(client, "转人工")

    queue = await client.get("/v1/console/queue")

    assert queue.status_code == 200
    [ticket] = queue.json()
    assert ticket["session_id"] == body["session_id"] and ticket["status"] == "queued"
    assert ticket["position"] == 1 and ticket["language"] == "zh" and ticket["waiting_s"] >= 0
    assert ticket["reason"] == "customer_request" and "customer said: 转人工" in ticket["summary"]
    detail = (await client.get(f"/v1/console/tickets/{ticket['id']}")).json()
    assert detail["context"]["intent"] == "human_agent"
    assert [(m["role"], m["text"]) for m in detail["transcript"]] == [("user", "转人工"), ("assistant", body["reply"])]
    assert detail["transcript"][1]["route"] == "handoff"


async def test_an_agent_takes_over_and_the_bot_stays_silent_until_handed_back(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.default_reply = BOT_ANSWER
    session_id, ticket_id = await hand_off(client)

    claimed = await client.post(f"/v1/console/tickets/{ticket_id}/claim")
    assert claimed.status_code == 200 and claimed.json()["status"] == "assigned"
    assert claimed.json()["agent_name"] == "demo" and claimed.json()["position"] is None
    said = await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": " 您好，我是客服，请稍等。 "})
    assert (
        said.status_code == 201 and said.json()["role"] == "agent" and said.json()["text"] == "您好，我是客服，请稍等。"
    )
    calls_before = len(llm.calls)

    silent = await ask(client, "我的订单还没到", session_id)

    assert silent["reply"] == "" and silent["silent"] is True and silent["handoff"] is True
    assert len(llm.calls) == calls_before, "the bot's model was asked while a person owned the conversation"
    history = (await client.get(f"/v1/sessions/{session_id}/messages")).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "system", "agent", "user"]
    assert history[2]["text"] == "人工客服 demo 已接入，正在为您服务。"
    detail = (await client.get(f"/v1/console/tickets/{ticket_id}")).json()
    assert detail["transcript"][-2]["agent"] == "demo" and detail["transcript"][-1]["text"] == "我的订单还没到"

    closed = await client.post(
        f"/v1/console/tickets/{ticket_id}/close",
        json={"resolution_code": "resolved", "note": "told the customer", "hand_back": True},
    )
    assert closed.status_code == 200 and closed.json()["status"] == "returned"
    assert closed.json()["resolution_code"] == "resolved"
    assert (await client.get("/v1/console/queue")).json() == []

    answered = await ask(client, "什么时候发货？", session_id)
    assert answered["reply"] == BOT_ANSWER and answered["silent"] is False
    assert len(llm.calls) == calls_before + 1
    audit = await services_of(app).store.audit_events(tenant_id="default", limit=20)
    assert {"ticket.claim", "ticket.message", "ticket.close"} <= {e.action for e in audit}
    assert all("请稍等" not in repr(e.data) for e in audit), "the agent's words leaked into the audit log"


async def test_closing_needs_a_known_resolution_code_and_an_open_ticket(client: httpx.AsyncClient) -> None:
    _, ticket_id = await hand_off(client)

    bad = await client.post(
        f"/v1/console/tickets/{ticket_id}/close", json={"resolution_code": "fixed", "hand_back": True}
    )
    assert bad.status_code == 422 and "resolution_code" in bad.json()["error"]["message"]
    duplicate = {"resolution_code": "duplicate", "hand_back": False}
    assert (await client.post(f"/v1/console/tickets/{ticket_id}/close", json=duplicate)).status_code == 200
    again = await client.post(f"/v1/console/tickets/{ticket_id}/close", json=duplicate)
    assert again.status_code == 409 and "already closed" in again.json()["error"]["message"]
    late = await client.post(f"/v1/console/tickets/{ticket_id}/claim")
    assert late.status_code == 409


async def test_claiming_twice_greets_once_and_closing_tells_the_customer_it_ended(client: httpx.AsyncClient) -> None:
    session_id, ticket_id = await hand_off(client)

    first = await client.post(f"/v1/console/tickets/{ticket_id}/claim")
    again = await client.post(f"/v1/console/tickets/{ticket_id}/claim")
    await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "已为您登记。"})
    closed = await client.post(
        f"/v1/console/tickets/{ticket_id}/close", json={"resolution_code": "resolved", "hand_back": False}
    )

    assert first.status_code == again.status_code == 200 and closed.json()["status"] == "closed"
    history = (await client.get(f"/v1/sessions/{session_id}/messages")).json()["messages"]
    system = [m["text"] for m in history if m["role"] == "system"]
    assert system == ["人工客服 demo 已接入，正在为您服务。", system[-1]] and "结束了本次会话" in system[-1]
    [agent] = [m for m in history if m["role"] == "agent"]
    assert agent["agent"] == "demo" and agent["text"] == "已为您登记。"


async def test_empty_or_unclaimed_agent_messages_are_refused(client: httpx.AsyncClient) -> None:
    _, ticket_id = await hand_off(client)

    unclaimed = await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "hello"})
    assert unclaimed.status_code == 409 and "claim" in unclaimed.json()["error"]["message"]
    await client.post(f"/v1/console/tickets/{ticket_id}/claim")
    empty = await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "   "})
    assert empty.status_code == 422
    missing = await client.get("/v1/console/tickets/0123456789abcdef/suggestions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def _operator(app: FastAPI, username: str, role: str) -> None:
    await services_of(app).access.accounts.create_operator(  # type: ignore[union-attr]
        username=username, password=PASSWORD, role=role, tenant_id="default"
    )


async def _bearer(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    resp = await client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def test_one_agent_per_ticket_and_viewers_stay_out(client: httpx.AsyncClient, app: FastAPI) -> None:
    session_id, ticket_id = await hand_off(client)  # open demo mode: no accounts yet
    for username, role in (("alice", "agent"), ("bob", "agent"), ("vera", "viewer")):
        await _operator(app, username, role)
    alice, bob, vera = [await _bearer(client, name) for name in ("alice", "bob", "vera")]

    assert (await client.get("/v1/console/queue")).status_code == 401
    forbidden = await client.get("/v1/console/queue", headers=vera)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert (await client.post(f"/v1/console/tickets/{ticket_id}/claim", headers=vera)).status_code == 403

    assert (await client.post(f"/v1/console/tickets/{ticket_id}/claim", headers=alice)).status_code == 200
    assert (await client.post(f"/v1/console/tickets/{ticket_id}/claim", headers=alice)).status_code == 200
    taken = await client.post(f"/v1/console/tickets/{ticket_id}/claim", headers=bob)
    assert (
        taken.status_code == 409 and taken.json()["error"]["message"] == f"alice is already handling ticket {ticket_id}"
    )
    butting_in = await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "hi"}, headers=bob)
    assert butting_in.status_code == 409 and "alice" in butting_in.json()["error"]["message"]
    stealing = {"resolution_code": "other", "hand_back": True}
    assert (await client.post(f"/v1/console/tickets/{ticket_id}/close", json=stealing, headers=bob)).status_code == 409

    mine = await client.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "Hi!"}, headers=alice)
    assert mine.status_code == 201 and mine.json()["agent"] == "alice"
    stored = await services_of(app).store.list_messages(session_id)
    assert [m.text for m in stored if m.role == "system"] == ["人工客服 alice 已接入，正在为您服务。"]


@pytest.fixture
async def knowledge_app(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[FastAPI]:
    root = tmp_path / "knowledge"
    (root / "zh").mkdir(parents=True)
    (root / "zh" / "shipping.md").write_text(
        "# 发货与物流\n\n## 发货时间\n\n订单在付款后 48 小时内发货，节假日顺延。\n\n"
        "## 运费\n\n订单满 99 元包邮，不满 99 元收取 8 元运费。\n",
        encoding="utf-8",
    )
    knowledge = {"source_dir": root, "embedding": {"backend": "hashing"}}
    settings = make_settings(tmp_path, knowledge=knowledge, dialogue={"now": WITHIN_SUPPORT_HOURS})
    application = create_app(settings, llm=llm)
    async with application.router.lifespan_context(application):
        yield application


async def test_suggestions_come_from_the_knowledge_base(knowledge_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=knowledge_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
        session_id, ticket_id = await hand_off(client)
        await client.post(f"/v1/console/tickets/{ticket_id}/claim")
        await ask(client, "我的订单什么时候发货？", session_id)

        last_message = (await client.get(f"/v1/console/tickets/{ticket_id}/suggestions")).json()
        asked = (await client.get(f"/v1/console/tickets/{ticket_id}/suggestions", params={"q": "运费多少"})).json()

    assert last_message["query"] == "我的订单什么时候发货？"
    assert 1 <= len(last_message["suggestions"]) <= 3
    assert "48 小时内发货" in last_message["suggestions"][0]["text"]
    assert last_message["suggestions"][0]["title"].startswith("发货与物流")
    assert asked["query"] == "运费多少" and "99 元包邮" in asked["suggestions"][0]["text"]


async def test_suggestions_are_empty_without_a_knowledge_base(client: httpx.AsyncClient) -> None:
    _, ticket_id = await hand_off(client)
    body = (await client.get(f"/v1/console/tickets/{ticket_id}/suggestions")).json()
    assert body == {"query": "转人工", "suggestions": []}


async def test_agent_and_customer_sockets_carry_the_conversation_live(settings: Settings, llm: ScriptedLLM) -> None:
    with live_server(create_app(settings, llm=llm)) as base:
        ws_base = base.replace("http://", "ws://")
        async with (
            httpx.AsyncClient(base_url=base) as http,
            connect(f"{ws_base}/v1/console/ws") as console,
            connect(f"{ws_base}/v1/ws?user_id=customer-ws") as customer,
        ):
            assert await _next(console, "queue") == {"type": "queue", "tickets": []}
            session = await _next(customer, "session")
            assert session["owner"] == "bot" and session["handoff"] is None
            await customer.send(json.dumps({"type": "message", "text": "转人工", "client_message_id": "m1"}))
            reply = await _next(customer, "reply")
            assert reply["handoff"] is True and reply["silent"] is False

            opened = await _next(console, "ticket_opened")
            ticket_id = opened["ticket"]["id"]
            assert opened["ticket"]["session_id"] == session["session_id"]
            snapshot = await _next(console, "queue")
            assert [t["id"] for t in snapshot["tickets"]] == [ticket_id] and snapshot["tickets"][0]["position"] == 1

            assert (await http.post(f"/v1/console/tickets/{ticket_id}/claim")).status_code == 200
            joined = await _next(customer, "status")
            assert joined["owner"] == "human" and joined["message"]["text"] == "人工客服 demo 已接入，正在为您服务。"
            assert (await _next(console, "ticket_claimed"))["ticket"]["agent_name"] == "demo"

            await http.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": "您好，我来帮您"})
            pushed = await _next(customer, "agent_message")
            assert pushed["agent"] == "demo" and pushed["message"]["text"] == "您好，我来帮您"
            assert pushed["message"]["role"] == "agent"

            await customer.send(json.dumps({"type": "message", "text": "好的谢谢", "client_message_id": "m2"}))
            quiet = await _next(customer, "reply")
            assert quiet["silent"] is True and quiet["reply"] == ""
            relayed = await _next(console, "customer_message")
            assert relayed["ticket_id"] == ticket_id and relayed["message"]["text"] == "好的谢谢"

            close = {"resolution_code": "resolved", "hand_back": True}
            assert (await http.post(f"/v1/console/tickets/{ticket_id}/close", json=close)).status_code == 200
            returned = await _next(customer, "status")
            assert returned["owner"] == "bot" and returned["message"]["role"] == "system"
            assert (await _next(console, "ticket_closed"))["ticket"]["status"] == "returned"
            assert (await _next(console, "queue"))["tickets"] == []
    assert len(llm.calls) == 0


async def test_a_reconnecting_customer_learns_who_has_the_conversation(settings: Settings, llm: ScriptedLLM) -> None:
    with live_server(create_app(settings, llm=llm)) as base:
        ws_base = base.replace("http://", "ws://")
        async with httpx.AsyncClient(base_url=base) as http:
            body = (await http.post("/v1/chat", json={"user_id": "customer-2", "text": "转人工"})).json()
            url = f"{ws_base}/v1/ws?user_id=customer-2&session_id={body['session_id']}"
            async with connect(url) as customer:
                session = await _next(customer, "session")
                assert session["owner"] == "human" and session["handoff"] == {"status": "queued", "agent": None}
            [ticket] = (await http.get("/v1/console/queue")).json()
            await http.post(f"/v1/console/tickets/{ticket['id']}/claim")
            async with connect(url) as customer:
                assert (await _next(customer, "session"))["handoff"] == {"status": "assigned", "agent": "demo"}


async def test_the_console_socket_needs_an_agent(settings: Settings, llm: ScriptedLLM) -> None:
    with live_server(create_app(settings, llm=llm)) as base:
        ws_base = base.replace("http://", "ws://")
        async with httpx.AsyncClient(base_url=base) as http:
            # Open demo mode: the first account is created without signing in.
            account = {"username": "vera", "password": PASSWORD, "role": "viewer"}
            assert (await http.post("/v1/admin/users", json=account)).status_code == 201
            login = await http.post("/v1/auth/login", json={"username": "vera", "password": PASSWORD})
            token = login.json()["access_token"]
        async with connect(f"{ws_base}/v1/console/ws") as anonymous:
            assert (await _next(anonymous, "error"))["error"]["code"] == "unauthorized"
        protocols: list[Subprotocol] = [Subprotocol("kefu.v1"), Subprotocol(f"kefu.token.{token}")]
        async with connect(f"{ws_base}/v1/console/ws", subprotocols=protocols) as viewer:
            assert (await _next(viewer, "error"))["error"]["code"] == "forbidden"
        async with connect(f"{ws_base}/v1/console/ws?token=not-a-token") as forged:
            assert (await _next(forged, "error"))["error"]["code"] == "unauthorized"


async def _next(socket: ClientConnection, kind: str, limit: int = 10) -> dict[str, Any]:
    """The next event of `kind` on a socket, skipping others (acks, typing, deltas)."""
    for _ in range(limit):
        event: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} event within {limit} events")
