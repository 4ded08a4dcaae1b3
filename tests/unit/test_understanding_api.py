"""Understanding through the real chat API: handoff requests, traces on stored replies, the admin view, emotion."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.config import Settings
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings

WITHIN_SUPPORT_HOURS = "2026-03-02T10:00:00+08:00"
"""The demo shop's agents work 09:00-21:00 Shanghai time; the handoff notice depends on it, so the clock is pinned."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, dialogue={"now": WITHIN_SUPPORT_HOURS})


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def test_transfer_request_hands_off_with_the_fixed_reply_and_no_model_call(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    resp = await client.post("/v1/chat", json={"user_id": "u-handoff", "text": "转人工"})
    body = resp.json()
    assert resp.status_code == 200 and body["handoff"] is True
    assert body["reply"].startswith(services_of(app).runner.deps.prompts.reply("handoff_requested", "zh"))
    assert "排在第 1 位" in body["reply"]  # the queue position
    assert "人工客服" in body["reply"] and body["intent"] == "human_agent"
    assert llm.calls == []

    english = (await client.post("/v1/chat", json={"user_id": "u-handoff-en", "text": "human agent please"})).json()
    assert english["handoff"] is True and "human agent" in english["reply"] and "queue" in english["reply"]
    assert llm.calls == []


async def test_outside_support_hours_the_customer_is_promised_a_follow_up(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    app = create_app(make_settings(tmp_path, dialogue={"now": "2026-03-02T23:30:00+08:00"}), llm=llm)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu") as client:
            body = (await client.post("/v1/chat", json={"user_id": "u-night", "text": "转人工"})).json()
            english = (
                await client.post("/v1/chat", json={"user_id": "u-night-en", "text": "human agent please"})
            ).json()

    assert body["handoff"] is True and "非人工服务时间" in body["reply"] and "排在第" not in body["reply"]
    assert english["handoff"] is True and "off duty" in english["reply"] and "queue" not in english["reply"]
    assert llm.calls == []


async def test_order_question_records_intent_and_order_number_and_the_admin_view_shows_why(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    body = (await client.post("/v1/chat", json={"user_id": "u-order", "text": "我的订单LM26110625到哪了？"})).json()
    assert body["intent"] == "track_order" and body["handoff"] is False
    assert "手机号" in body["reply"], "the order-status flow verifies the customer before showing anything"
    assert llm.calls == []

    turn = (await client.get(f"/v1/admin/turns/{body['message_id']}")).json()
    understanding, route = turn["understanding"], turn["route_decision"]
    assert turn["customer_text"] == "我的订单LM26110625到哪了？"
    assert understanding["intent"] == "track_order" and understanding["confidence"] > 0.5
    assert understanding["stage"] in ("rules", "classifier") and understanding["language"] == "zh"
    assert {"type": "order_number", "value": "LM26110625"}.items() <= understanding["entities"][0].items()
    assert route["handler"] == "flow" and route["answered_by"] == "fallthrough"
    assert turn["route"] == "flow"
    assert any("track_order" in reason for reason in route["reasons"]) and route["missing"] == []
    assert "understand" in turn["stage_latency_ms"]
    assert "embed" in understanding["latency_ms"]

    by_customer_message = (await client.get(f"/v1/admin/turns/{turn['reply_to']}")).json()
    assert by_customer_message["message_id"] == body["message_id"]
    session = (await client.get(f"/v1/admin/sessions/{body['session_id']}/turns")).json()
    assert [t["intent"] for t in session["turns"]] == ["track_order"]


async def test_angry_customer_is_recorded_and_reaches_a_human_when_it_goes_on(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    first = (
        await client.post(
            "/v1/chat", json={"user_id": "u-angry", "text": "什么破物流，LM26110799 一个星期了还没到，气死我了"}
        )
    ).json()
    trace = (await client.get(f"/v1/admin/turns/{first['message_id']}")).json()
    assert trace["understanding"]["emotion"]["label"] in ("negative", "angry")
    assert first["handoff"] is False, "one angry message about an order goes to the order handler first"

    second = (
        await client.post(
            "/v1/chat",
            json={"user_id": "u-angry", "session_id": first["session_id"], "text": "你们到底管不管？太过分了，骗子！"},
        )
    ).json()
    assert second["handoff"] is True
    route = (await client.get(f"/v1/admin/turns/{second['message_id']}")).json()["route_decision"]
    assert route["handler"] == "handoff"
    assert any("unhappy turn" in r or "angry" in r for r in route["reasons"])
    assert llm.calls == []  # the order flow asked for verification; the handoff needs no model either


async def test_unknown_turn_is_404_for_the_admin(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/admin/turns/nope")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
