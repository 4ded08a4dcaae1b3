"""Service analytics and customer feedback, from real conversations through the API to the admin report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Table, select, update

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import Completion, Usage
from kefu.services import Services
from kefu.store.dialogue_models import Ticket
from kefu.store.models import ChatMessage, ChatSession, Feedback
from tests.conftest import make_settings

WITHIN_SUPPORT_HOURS = "2026-03-02T10:00:00+08:00"
"""The demo shop's agents work 09:00-21:00 Shanghai time; this is also the report's "now"."""
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
RANGE = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T02:00:00Z"}
POLICY = """# Returns policy

## No-reason returns

Return any item within 7 days of delivery if it is unused. The buyer pays the return postage.
"""
PRICES = {"scripted": {"input": 2.0, "output": 8.0}}
_SESSIONS = cast(Table, ChatSession.__table__)
_MESSAGES = cast(Table, ChatMessage.__table__)
_TICKETS = cast(Table, Ticket.__table__)
_FEEDBACK = cast(Table, Feedback.__table__)


@pytest.fixture
async def app(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[FastAPI]:
    root = tmp_path / "knowledge"
    (root / "en").mkdir(parents=True)
    (root / "en" / "returns.md").write_text(POLICY)
    # The hashing embedder's similarities are lower than a real model's: thresholds to match it.
    knowledge = {
        "source_dir": root,
        "embedding": {"backend": "hashing"},
        "min_relevance": 0.3,
        "min_relevance_low": 0.2,
        "rewrite": "off",
    }
    settings = make_settings(
        tmp_path,
        knowledge=knowledge,
        dialogue={"now": WITHIN_SUPPORT_HOURS},
        analytics={"resolution_window_minutes": 30, "model_prices": PRICES, "currency": "CNY"},
    )
    application = create_app(settings, llm=llm)
    async with application.router.lifespan_context(application):
        yield application


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def answer(prompt_tokens: int, completion_tokens: int) -> Completion:
    return Completion(
        text="Hello! How can I help you today?",
        model="scripted",
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
    )


async def say(client: httpx.AsyncClient, user: str, text: str, session_id: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"user_id": user, "text": text}
    if session_id:
        payload["session_id"] = session_id
    resp = await client.post("/v1/chat", json=payload)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def pin(app: FastAPI, session_id: str, start: datetime) -> None:
    """Move a conversation to `start`: the session then, its messages a minute apart (the report's clock is fixed)."""
    store = services_of(app).store
    messages = await store.list_messages(session_id)
    async with store.engine.begin() as conn:
        await conn.execute(update(_SESSIONS).where(_SESSIONS.c.id == session_id).values(created_at=start))
        for i, message in enumerate(messages):
            at = start + timedelta(minutes=i)
            await conn.execute(update(_MESSAGES).where(_MESSAGES.c.id == message.id).values(created_at=at))


async def report(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/v1/admin/analytics", params=RANGE)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_the_report_counts_resolved_handed_off_and_unanswered_conversations_ratings_and_cost(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue(answer(1000, 200), answer(100, 20), answer(300, 50), answer(300, 50), answer(999, 99))
    # Resolved: answered, and the customer said thanks (and liked the answer, after first voting it down).
    thanked = await say(client, "c-thanks", "hi!")
    bye = await say(client, "c-thanks", "thanks", thanked["session_id"])
    assert bye["intent"] == "thanks_goodbye"
    # Resolved: answered, and the customer left for longer than the window.
    quiet = await say(client, "c-quiet", "hi!")
    # Not yet: answered ten minutes before the report; the customer may still come back.
    recent = await say(client, "c-recent", "hi!")
    # Handed off: claimed two minutes after the handoff, closed ten minutes later.
    handed = await say(client, "c-human", "转人工")
    assert handed["handoff"] is True
    [ticket] = (await client.get("/v1/console/queue")).json()
    assert (await client.post(f"/v1/console/tickets/{ticket['id']}/claim")).status_code == 200
    closing = {"resolution_code": "resolved", "hand_back": True}
    assert (await client.post(f"/v1/console/tickets/{ticket['id']}/close", json=closing)).status_code == 200
    # Unanswered: the knowledge base has nothing on it.
    unanswered = await say(client, "c-bikes", "你们卖自行车吗？")
    # Outside the range: the day before.
    earlier = await say(client, "c-earlier", "hi!")
    llm.assert_complete()

    await pin(app, thanked["session_id"], datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    await pin(app, quiet["session_id"], datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    await pin(app, recent["session_id"], datetime(2026, 3, 2, 1, 49, tzinfo=UTC))
    await pin(app, handed["session_id"], datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    await pin(app, unanswered["session_id"], datetime(2026, 3, 2, 1, 10, tzinfo=UTC))
    await pin(app, earlier["session_id"], datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    async with services_of(app).store.engine.begin() as conn:
        await conn.execute(
            update(_TICKETS)
            .where(_TICKETS.c.id == ticket["id"])
            .values(
                created_at=datetime(2026, 3, 2, 1, 1, tzinfo=UTC),
                claimed_at=datetime(2026, 3, 2, 1, 3, tzinfo=UTC),
                closed_at=datetime(2026, 3, 2, 1, 13, tzinfo=UTC),
            )
        )

    first_reply = f"/v1/sessions/{thanked['session_id']}/messages/{thanked['message_id']}/feedback"
    assert (await client.post(first_reply, json={"rating": "down"})).status_code == 200
    assert (await client.post(first_reply, json={"rating": "up", "comment": "clear answer"})).status_code == 200
    bikes = f"/v1/sessions/{unanswered['session_id']}/messages/{unanswered['message_id']}/feedback"
    assert (await client.post(bikes, json={"rating": "down"})).status_code == 200
    for session_id, score in ((thanked["session_id"], 5), (quiet["session_id"], 4), (handed["session_id"], 2)):
        rated = await client.post(f"/v1/sessions/{session_id}/rating", json={"score": score})
        assert rated.status_code == 200, rated.text

    body = await report(client)

    assert (body["conversations"], body["resolved"], body["resolution_rate"]) == (5, 2, 0.4)
    assert body["awaiting_window"] == 1 and body["resolution_window_minutes"] == 30
    assert (body["handed_off"], body["handoff_rate"]) == (1, 0.2)
    assert body["handoff_reasons"] == [{"reason": "customer_request", "count": 1}]
    assert body["csat"] == {
        "ratings": 3,
        "average": 3.67,
        "satisfied": 2,
        "satisfied_share": 0.6667,
        "distribution": {"2": 1, "4": 1, "5": 1},
    }
    assert body["thumbs"] == {"up": 1, "down": 1}
    assert body["unanswered"] == 1
    assert body["top_unanswered"] == [{"question": "你们卖自行车吗？", "count": 1}]
    intents = {(i["day"], i["intent"]): i["count"] for i in body["intents_by_day"]}
    assert intents[("2026-03-02", "thanks_goodbye")] == 1 and intents[("2026-03-02", "human_agent")] == 1
    assert all(i["day"] == "2026-03-02" for i in body["intents_by_day"])
    assert body["handling"] == {
        "tickets": 1,
        "claimed": 1,
        "closed": 1,
        "avg_first_response_s": 120.0,
        "avg_handling_s": 600.0,
    }
    prompt, completion = 1000 + 100 + 300 + 300, 200 + 20 + 50 + 50
    cost = prompt / 1000 * 2.0 + completion / 1000 * 8.0
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": round(cost, 6),
        "cost_per_conversation": round(cost / 5, 6),
        "currency": "CNY",
        "by_model": [
            {"model": "scripted", "prompt_tokens": prompt, "completion_tokens": completion, "cost": round(cost, 6)}
        ],
    }
    assert body["as_of"].startswith("2026-03-02T02:00:00")


async def test_an_empty_range_has_counts_and_no_rates(client: httpx.AsyncClient) -> None:
    body = await report(client)

    assert (body["conversations"], body["resolution_rate"], body["handoff_rate"]) == (0, None, None)
    assert body["csat"]["average"] is None and body["usage"]["cost_per_conversation"] is None


async def test_a_reversed_range_is_a_clear_400(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/admin/analytics", params={"from": RANGE["to"], "to": RANGE["from"]})

    assert resp.status_code == 400 and "must be before" in resp.json()["error"]["message"]


async def test_a_second_vote_replaces_the_first_and_comments_lose_personal_data(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.default_reply = "Hello!"
    turn = await say(client, "c-1", "hi!")
    url = f"/v1/sessions/{turn['session_id']}/messages/{turn['message_id']}/feedback"

    first = await client.post(url, json={"rating": "up"})
    second = await client.post(url, json={"rating": "down", "comment": "call me on 13812345678"})

    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["rating"] == -1
    assert "13812345678" not in second.json()["comment"]
    async with services_of(app).store.engine.connect() as conn:
        rows = (await conn.execute(select(_FEEDBACK.c.kind, _FEEDBACK.c.rating, _FEEDBACK.c.comment))).all()
    assert [(kind, rating) for kind, rating, _ in rows] == [("thumb", -1)]
    assert "13812345678" not in str(rows[0][2])
    today = datetime.now(UTC)
    around = {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    listed = (await client.get("/v1/admin/feedback", params=around)).json()
    assert [(f["kind"], f["rating"], f["message_id"]) for f in listed] == [("thumb", -1, turn["message_id"])]


async def test_only_replies_of_the_session_can_be_rated_and_scores_are_1_to_5(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.default_reply = "Hello!"
    mine = await say(client, "c-1", "hi!")
    other = await say(client, "c-2", "hi!")
    question_id = (await services_of(app).store.list_messages(mine["session_id"]))[0].id
    base = f"/v1/sessions/{mine['session_id']}"

    own_message = await client.post(f"{base}/messages/{question_id}/feedback", json={"rating": "up"})
    foreign = await client.post(f"{base}/messages/{other['message_id']}/feedback", json={"rating": "up"})
    unknown = await client.post("/v1/sessions/no-such-session/rating", json={"score": 3})
    sideways = await client.post(f"{base}/messages/{mine['message_id']}/feedback", json={"rating": "meh"})
    too_high = await client.post(f"{base}/rating", json={"score": 6})

    assert own_message.status_code == 400 and "only replies can be rated" in own_message.json()["error"]["message"]
    assert foreign.status_code == 404 and unknown.status_code == 404
    assert sideways.status_code == 422 and "rating" in sideways.json()["error"]["message"]
    assert too_high.status_code == 422 and "score" in too_high.json()["error"]["message"]


async def test_a_customer_token_rates_its_own_session_only(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.default_reply = "Hello!"
    mine = await say(client, "c-1", "hi!")
    other = await say(client, "c-2", "hi!")
    grant = await client.post("/v1/widget/session", json={"user_id": "c-1", "session_id": mine["session_id"]})
    assert grant.status_code == 200, grant.text
    bearer = {"Authorization": f"Bearer {grant.json()['token']}"}

    own = await client.post(f"/v1/sessions/{mine['session_id']}/rating", json={"score": 5}, headers=bearer)
    theirs = await client.post(f"/v1/sessions/{other['session_id']}/rating", json={"score": 1}, headers=bearer)

    assert own.status_code == 200 and own.json()["rating"] == 5
    assert theirs.status_code == 404


async def test_viewers_may_read_the_report_and_strangers_may_not(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth={"mode": "required", "jwt_secret": "x" * 40})
    application = create_app(settings, llm=ScriptedLLM())
    async with application.router.lifespan_context(application):
        access = services_of(application).access
        assert access is not None
        await access.accounts.create_operator(
            username="vera", password="correct horse battery", role="viewer", tenant_id="default"
        )
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
            login = await client.post("/v1/auth/login", json={"username": "vera", "password": "correct horse battery"})
            token = login.json()["access_token"]

            anonymous = await client.get("/v1/admin/analytics", params=RANGE)
            viewer = await client.get("/v1/admin/analytics", params=RANGE, headers={"Authorization": f"Bearer {token}"})

    assert anonymous.status_code == 401
    assert viewer.status_code == 200 and viewer.json()["conversations"] == 0
