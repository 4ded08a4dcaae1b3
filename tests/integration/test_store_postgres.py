"""The conversation store on a real PostgreSQL server: migrations, a full turn, idempotency, audit chain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text, update

from kefu.api.app import create_app
from kefu.dialogue.state import DialogueStates, FlowRun
from kefu.errors import ConflictError
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import Completion, Usage
from kefu.services import Services
from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate, migration_status
from kefu.store.dialogue_models import Ticket
from kefu.store.models import ChatMessage, ChatSession
from tests.conftest import make_settings

pytestmark = pytest.mark.postgres


async def test_full_turn_is_stored_in_postgres(tmp_path: Path, postgres_url: str) -> None:
    llm = ScriptedLLM(["退货请在订单页提交申请。"])
    app = create_app(make_settings(tmp_path, database_url=postgres_url), llm=llm)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        assert services.engine.dialect.name == "postgresql"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = (
                await client.post("/v1/chat", json={"user_id": "pg1", "text": "怎么退货？", "client_message_id": "k1"})
            ).json()
            again = (
                await client.post(
                    "/v1/chat",
                    json={
                        "user_id": "pg1",
                        "session_id": body["session_id"],
                        "text": "怎么退货？",
                        "client_message_id": "k1",
                    },
                )
            ).json()
            history = (await client.get(f"/v1/sessions/{body['session_id']}/messages")).json()["messages"]
        assert again["message_id"] == body["message_id"]
        assert [(m["role"], m["text"]) for m in history] == [
            ("user", "怎么退货？"),
            ("assistant", "退货请在订单页提交申请。"),
        ]
        async with services.engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM messages"))
            stages = await conn.scalar(text("SELECT stage_latency_ms FROM messages WHERE role = 'assistant'"))
        assert count == 2 and {"intake", "prompt", "generate"} <= set(stages)


async def test_concurrent_migrations_from_several_workers_are_safe(postgres_url: str) -> None:
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(e) for e in engines))
        current, head = await migration_status(engines[0])
        assert current == head and head
    finally:
        for e in engines:
            await e.dispose()


async def test_customer_message_survives_llm_failure_in_postgres(tmp_path: Path, postgres_url: str) -> None:
    from kefu.errors import LLMUnavailableError

    app = create_app(make_settings(tmp_path, database_url=postgres_url), llm=ScriptedLLM([LLMUnavailableError("down")]))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            resp = await client.post("/v1/chat", json={"user_id": "pg2", "text": "hello"})
        assert resp.status_code == 200 and resp.json()["error"] == "llm_unavailable"
        store: ConversationStore = app.state.services.store
        stored = await store.list_messages(resp.json()["session_id"])
        assert [(m.role, m.error_code) for m in stored] == [("user", None), ("assistant", "llm_unavailable")]


async def test_audit_chain_detects_tampering_in_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        await migrate(engine)
        store = ConversationStore(engine)
        await asyncio.gather(*(store.audit(actor="admin", action=f"kb.update.{i}", data={"n": i}) for i in range(5)))
        assert await store.verify_audit_chain() == (True, 5, "")
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE id = 3"))
        ok, checked, problem = await store.verify_audit_chain()
        assert not ok and checked == 5 and "audit event 3" in problem
    finally:
        await engine.dispose()


async def test_two_first_saves_of_a_sessions_dialogue_state_conflict_in_postgres(postgres_url: str) -> None:
    """Two turns of a new session both start with no state; the second to save is told to resend."""
    engine = create_engine(postgres_url)
    try:
        await migrate(engine)
        store = ConversationStore(engine)
        states = DialogueStates(store)
        session = await store.open_session(session_id=None, user_id="u-race", channel="web")
        first, second = await states.load(session.id, new_session=True), await states.load(session.id)
        first.unresolved_streak = 1
        await states.save(session.id, "default", first)
        second.active = FlowRun(flow="order_status", run_id="r1", step="ask_order", slots={})
        with pytest.raises(ConflictError):
            await states.save(session.id, "default", second)
        saved = await states.load(session.id)
        assert (saved.unresolved_streak, saved.active, saved.version) == (1, None, 1)
        saved.unresolved_streak = 2
        await states.save(session.id, "default", saved)  # the session goes on after the refused save
        assert (await states.load(session.id)).version == 2
    finally:
        await engine.dispose()


async def test_a_flow_survives_a_restart_and_a_handoff_ticket_is_queued_in_postgres(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dialogue state and ticket tables on PostgreSQL: a return started on one kefu instance is confirmed on
    a fresh one (the step is read back from the database), and asking for a person queues a ticket there."""
    from lumo_shop.app import create_app as create_shop_app
    from tests.conftest import DEMO_SHOP

    token = "pg-shop-token"
    monkeypatch.setenv("LUMO_SHOP_TOKEN", token)
    shop = create_shop_app(tmp_path / "shop.db", DEMO_SHOP, now="as_of", token=token)
    settings = make_settings(tmp_path, database_url=postgres_url, dialogue={"now": "2026-11-20T15:00:00+08:00"})

    async def say(app_: object, text_: str, session_id: str | None) -> dict[str, object]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_), base_url="http://t") as client:
            body = {"user_id": "pg-flow", "text": text_, **({"session_id": session_id} if session_id else {})}
            response = await client.post("/v1/chat", json=body)
            assert response.status_code == 200, response.text
            return dict(response.json())

    first = create_app(settings, llm=ScriptedLLM(), action_transports={"shop": httpx.ASGITransport(app=shop)})
    async with first.router.lifespan_context(first):
        asked = await say(first, "我要退货，订单 LM26110625", None)
        session_id = str(asked["session_id"])
        await say(first, "0827", session_id)
        confirm = await say(first, "不想要了", session_id)
        assert "确认" in str(confirm["reply"])
    second = create_app(settings, llm=ScriptedLLM(), action_transports={"shop": httpx.ASGITransport(app=shop)})
    async with second.router.lifespan_context(second):
        done = await say(second, "确认", session_id)
        assert "退货申请已提交" in str(done["reply"])
        handed = await say(second, "转人工", session_id)
        assert handed["handoff"] is True and "排在第 1 位" in str(handed["reply"])
        services: Services = second.state.services
        async with services.engine.connect() as conn:
            tickets = (await conn.execute(text("SELECT status, session_id, context FROM tickets"))).all()
            state = await conn.scalar(
                text("SELECT count(*) FROM dialogue_states WHERE session_id = :s"), {"s": session_id}
            )
    assert [(t.status, t.session_id) for t in tickets] == [("queued", session_id)]
    assert state == 1


async def test_feedback_replaces_votes_and_the_analytics_report_adds_up_in_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    reply = Completion(text="您好！", model="scripted", usage=Usage(prompt_tokens=1000, completion_tokens=100))
    settings = make_settings(
        tmp_path,
        database_url=postgres_url,
        dialogue={"now": "2026-03-02T10:00:00+08:00"},
        analytics={"price_per_1k_input_tokens": 1.0, "price_per_1k_output_tokens": 4.0},
    )
    app = create_app(settings, llm=ScriptedLLM([reply]))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answered = (await client.post("/v1/chat", json={"user_id": "pg1", "text": "你好"})).json()
            handed = (await client.post("/v1/chat", json={"user_id": "pg2", "text": "转人工"})).json()
            [ticket] = (await client.get("/v1/console/queue")).json()
            await client.post(f"/v1/console/tickets/{ticket['id']}/claim")
            await client.post(
                f"/v1/console/tickets/{ticket['id']}/close", json={"resolution_code": "resolved", "hand_back": False}
            )
            thumb = f"/v1/sessions/{answered['session_id']}/messages/{answered['message_id']}/feedback"
            first = (await client.post(thumb, json={"rating": "down"})).json()
            second = (await client.post(thumb, json={"rating": "up"})).json()
            rated = await client.post(f"/v1/sessions/{handed['session_id']}/rating", json={"score": 3})
            assert first["id"] == second["id"] and rated.status_code == 200
            at = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
            async with services.engine.begin() as conn:
                await conn.execute(update(ChatSession.__table__).values(created_at=at))
                await conn.execute(update(ChatMessage.__table__).values(created_at=at))
                await conn.execute(
                    update(Ticket.__table__).values(
                        created_at=at,
                        claimed_at=datetime(2026, 3, 2, 1, 2, tzinfo=UTC),
                        closed_at=datetime(2026, 3, 2, 1, 12, tzinfo=UTC),
                    )
                )
            report = (
                await client.get(
                    "/v1/admin/analytics", params={"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T02:00:00Z"}
                )
            ).json()
    assert (report["conversations"], report["resolved"], report["handed_off"]) == (2, 1, 1)
    assert report["thumbs"] == {"up": 1, "down": 0}
    assert (report["csat"]["ratings"], report["csat"]["average"]) == (1, 3.0)
    assert report["handling"]["avg_first_response_s"] == 120.0 and report["handling"]["avg_handling_s"] == 600.0
    assert {i["day"] for i in report["intents_by_day"]} == {"2026-03-02"}
    assert report["usage"]["cost"] == 1.4 and report["usage"]["cost_per_conversation"] == 0.7
