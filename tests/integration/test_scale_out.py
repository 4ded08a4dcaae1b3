"""`kefu serve --workers 2` on real PostgreSQL and Redis: any worker serves any turn and relays any live event.

Both workers listen on one port and the kernel hands each new connection to either of them, so the tests open
fresh connections and read which worker served what from the JSON log (`tests.support.workers`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import DEMO_SHOP, UNDERSTANDING_CACHE
from tests.support.postgres import create_database, drop_database
from tests.support.workers import Server, counters, fresh_connections, serve_workers

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WITHIN_SUPPORT_HOURS = "2026-03-02T10:00:00+08:00"
"""The demo shop's agents work 09:00-21:00 Shanghai time; outside them the handoff notice differs."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_admin_dsn: str, redis_url: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("scale-out")
    database = f"kefu_test_{uuid.uuid4().hex[:12]}"
    dsn = asyncio.run(create_database(postgres_admin_dsn, database))
    settings = {
        "KEFU_DATA_DIR": str(root / "data"),
        "KEFU_CONFIG": str(root / "none.yaml"),
        "KEFU_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "KEFU_REDIS_URL": redis_url,
        "KEFU_SHOP__DIR": str(DEMO_SHOP),
        "KEFU_DIALOGUE__NOW": WITHIN_SUPPORT_HOURS,
        "KEFU_LLM__BACKEND": "testing",
        "KEFU_AUTH__MODE": "open",
        "KEFU_RATE_LIMIT__ENABLED": "false",
        "KEFU_UNDERSTANDING__CACHE_DIR": str(UNDERSTANDING_CACHE),
        "KEFU_UNDERSTANDING__LLM_FALLBACK": "false",
        "KEFU_GUARDS__EMBEDDING_CLASSIFIER": "false",
    }
    try:
        with serve_workers(settings, root, tables={"vectors"}) as running:  # the answer cache is in Redis
            yield running
    finally:
        asyncio.run(drop_database(postgres_admin_dsn, database))


async def _next(socket: ClientConnection, kind: str, limit: int = 10) -> dict[str, Any]:
    """The next event of `kind` on a socket, skipping others (deltas, queue snapshots)."""
    for _ in range(limit):
        event: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} event within {limit} events")


async def test_an_agent_on_one_worker_talks_live_with_a_customer_on_the_other(server: Server) -> None:
    async with AsyncExitStack() as sockets, fresh_connections(server.url) as http:
        console = await sockets.enter_async_context(connect(f"{server.ws_url}/v1/console/ws"))
        await _next(console, "queue")
        agent_worker = server.worker_of(console)
        for attempt in range(30):  # customers connect until one lands on the other worker
            customer = await sockets.enter_async_context(connect(f"{server.ws_url}/v1/ws?user_id=scale-{attempt}"))
            session = await _next(customer, "session")
            if server.worker_of(customer) != agent_worker:
                break
        else:
            pytest.fail("30 customer sockets all landed on the agent's worker")
        customer_worker = server.worker_of(customer)

        await customer.send(json.dumps({"type": "message", "text": "转人工", "client_message_id": "m1"}))
        reply = await _next(customer, "reply")
        assert reply["handoff"] is True and "排在第 1 位" in reply["reply"]
        opened = await _next(console, "ticket_opened")  # published by the customer's worker
        assert opened["ticket"]["session_id"] == session["session_id"]
        ticket_id = opened["ticket"]["id"]

        assert (await http.post(f"/v1/console/tickets/{ticket_id}/claim")).status_code == 200
        joined = await _next(customer, "status")
        assert joined["owner"] == "human" and joined["message"]["text"] == "人工客服 demo 已接入，正在为您服务。"

        said = [f"第 {n} 条：您好，我来帮您查一下" for n in range(1, 7)]
        for text in said:  # each POST may land on either worker; the customer hears every one, in order
            resp = await http.post(f"/v1/console/tickets/{ticket_id}/messages", json={"text": text})
            assert resp.status_code == 201, resp.text
        heard = [(await _next(customer, "agent_message"))["message"]["text"] for _ in said]
        assert heard == said

        await customer.send(json.dumps({"type": "message", "text": "好的谢谢", "client_message_id": "m2"}))
        assert (await _next(customer, "reply"))["silent"] is True
        relayed = await _next(console, "customer_message", limit=30)  # past the echoes of the agent's messages
        assert relayed["ticket_id"] == ticket_id and relayed["message"]["text"] == "好的谢谢"

        close = {"resolution_code": "resolved", "hand_back": True}
        assert (await http.post(f"/v1/console/tickets/{ticket_id}/close", json=close)).status_code == 200
        assert (await _next(customer, "status"))["owner"] == "bot"
    posts = server.workers_serving("POST /v1/console/tickets/")
    print(f"console on worker {agent_worker}, customer on worker {customer_worker}, agent POSTs served by {posts}")


async def test_a_conversation_alternating_between_workers_keeps_its_state(server: Server) -> None:
    user = f"alt-{uuid.uuid4().hex[:8]}"
    async with fresh_connections(server.url) as http:

        async def say(text: str, session_id: str | None = None) -> dict[str, Any]:
            resp = await http.post("/v1/chat", json={"user_id": user, "text": text, "session_id": session_id})
            assert resp.status_code == 200, resp.text
            body: dict[str, Any] = resp.json()
            return body

        first = await say("你好")
        session_id = first["session_id"]
        handed = await say("转人工", session_id)
        assert handed["handoff"] is True and handed["session_id"] == session_id
        waiting = [await say(f"还在吗 {n}", session_id) for n in range(6)]
        # The session belongs to a person now (stored in PostgreSQL): whichever worker answers, the bot only
        # tells the customer where they stand in the queue.
        assert all(w["session_id"] == session_id and "您前面还有" in w["reply"] for w in waiting), waiting

        history: list[list[tuple[str, str]]] = []
        for _ in range(30):  # read the history until both workers have served it
            resp = await http.get(f"/v1/sessions/{session_id}/messages")
            assert resp.status_code == 200, resp.text
            history.append([(m["role"], m["text"]) for m in resp.json()["messages"]])
            if len(set(server.workers_serving(f"GET /v1/sessions/{session_id}/messages"))) == 2:
                break
        else:
            pytest.fail("30 requests for the history were all served by one worker")
    expected_user_texts = ["你好", "转人工", *(f"还在吗 {n}" for n in range(6))]
    assert [text for role, text in history[0] if role == "user"] == expected_user_texts
    assert all(h == history[0] for h in history), "the workers disagree about the conversation"
    chats = server.workers_serving("POST /v1/chat")
    print(f"turns served by workers {chats}; history by {server.workers_serving('GET /v1/sessions/')}")
    assert len(chats) == 8


async def test_two_messages_of_one_session_sent_at_once_to_two_workers_are_both_answered(server: Server) -> None:
    """Each worker queues a session's turns; across workers the Redis session lock does. Each message starts a task
    (a flow asking for the order number) in the dialogue state: without the lock, two workers load the same state,
    and the second save fails, a fallback reply with error "conflict"."""
    replies: list[dict[str, Any]] = []
    async with fresh_connections(server.url) as http:
        for _ in range(10):
            user = f"burst-{uuid.uuid4().hex[:8]}"
            first = await http.post("/v1/chat", json={"user_id": user, "text": "你好"})
            session_id = first.json()["session_id"]
            sent = [
                http.post("/v1/chat", json={"user_id": user, "session_id": session_id, "text": text})
                for text in ("我要退货", "我想换货", "帮我取消订单")
            ]
            for resp in await asyncio.gather(*sent):
                assert resp.status_code == 200, resp.text
                replies.append(resp.json())
    assert [r["error"] for r in replies] == [None] * 30, [r["reply"] for r in replies if r["error"]]


async def test_a_message_one_worker_embedded_is_not_embedded_again_by_the_other(server: Server) -> None:
    """`kefu serve --workers 2` shares the query vectors between its workers (shared memory): a message new to the
    server runs the embedding model once, whichever worker receives it after that."""
    text = f"帮我查一下订单 LM{uuid.uuid4().int % 10**8:08d} 的状态"  # an order's status: never an answer-cache hit
    async with fresh_connections(server.url) as http:
        before = await counters(http, "kefu_query_embeddings", "source")
        seen = len(server.workers_serving("POST /v1/chat"))
        first = await http.post("/v1/chat", json={"user_id": "vectors-0", "text": text})
        assert first.status_code == 200, first.text
        computed = (await counters(http, "kefu_query_embeddings", "source"))["model"] - before.get("model", 0)
        assert computed >= 1
        for attempt in range(1, 30):  # until the other worker has answered the same message
            if len(set(server.workers_serving("POST /v1/chat")[seen:])) == 2:
                break
            resp = await http.post("/v1/chat", json={"user_id": f"vectors-{attempt}", "text": text})
            assert resp.status_code == 200, resp.text
        else:
            pytest.fail("30 messages were all answered by one worker")
        after = await counters(http, "kefu_query_embeddings", "source")
    assert after["model"] - before.get("model", 0) == computed, "the second worker ran the model again"
    assert after["workers"] - before.get("workers", 0) >= 1
