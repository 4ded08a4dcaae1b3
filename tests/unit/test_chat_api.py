"""POST /v1/chat, session history and the error contract, with the scripted LLM."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.errors import LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def test_chat_reply_is_returned_and_both_messages_are_stored(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue("您好！7天无理由退货，商品需保持完好。")
    resp = await client.post("/v1/chat", json={"user_id": "u1", "text": "退货政策是什么？"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["reply"] == "您好！7天无理由退货，商品需保持完好。"
    assert body["handoff"] is False and body["error"] is None and body["latency_ms"] > 0

    history = (await client.get(f"/v1/sessions/{body['session_id']}/messages")).json()["messages"]
    assert [(m["role"], m["text"]) for m in history] == [
        ("user", "退货政策是什么？"),
        ("assistant", "您好！7天无理由退货，商品需保持完好。"),
    ]
    stored = await services_of(app).store.list_messages(body["session_id"])
    reply = stored[1]
    assert reply.id == body["message_id"] and reply.reply_to == stored[0].id
    assert reply.model == "scripted" and reply.prompt_tokens and reply.completion_tokens
    assert set(reply.stage_latency_ms) >= {"intake", "prompt", "generate"}
    llm.assert_complete()


async def test_prompt_has_stable_system_prompt_first_then_history(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue("Orders over ¥99 ship free.", "Usually 2-3 days.")
    first = (await client.post("/v1/chat", json={"user_id": "u2", "text": "Is shipping free?"})).json()
    await client.post(
        "/v1/chat", json={"user_id": "u2", "session_id": first["session_id"], "text": "How long does it take?"}
    )
    one, two = llm.calls
    assert one.messages[0].role == "system" and one.messages[0] == two.messages[0]
    assert "English" in one.messages[0].content
    assert [(m.role, m.content) for m in two.messages[1:]] == [
        ("user", "Is shipping free?"),
        ("assistant", "Orders over ¥99 ship free."),
        ("user", "How long does it take?"),
    ]


async def test_history_is_trimmed_to_the_token_budget(tmp_path: Path, llm: ScriptedLLM) -> None:
    app = create_app(make_settings(tmp_path, chat={"history_tokens": 30}), llm=llm)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            sid = None
            for i in range(6):
                llm.queue(f"answer number {i} with several words in it")
                body = {"user_id": "u", "text": f"question number {i} with several words", "session_id": sid}
                sid = (await c.post("/v1/chat", json={k: v for k, v in body.items() if v})).json()["session_id"]
    last = llm.calls[-1].messages
    assert last[-1].content == "question number 5 with several words"
    assert 1 < len(last) - 2 < 10, "some but not all of the 10 earlier messages fit in 30 tokens"
    assert last[-2].content == "answer number 4 with several words in it", "the newest history is kept"


async def test_llm_down_gives_bilingual_fallback_http_200_and_a_recorded_error(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue(LLMUnavailableError("connection refused by 127.0.0.1:9"), LLMUnavailableError("down"))
    zh = await client.post("/v1/chat", json={"user_id": "u3", "text": "运费怎么算？"})
    en = await client.post("/v1/chat", json={"user_id": "u4", "text": "How is shipping charged?"})
    assert zh.status_code == en.status_code == 200
    assert "抱歉" in zh.json()["reply"] and zh.json()["error"] == "llm_unavailable"
    assert "Sorry" in en.json()["reply"] and en.json()["error"] == "llm_unavailable"
    stored = await services_of(app).store.list_messages(zh.json()["session_id"])
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[0].text == "运费怎么算？"
    assert stored[1].error_code == "llm_unavailable" and "connection refused" in (stored[1].error or "")


async def test_unexpected_bug_in_a_stage_is_not_a_500(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue(ZeroDivisionError("boom"))
    resp = await client.post("/v1/chat", json={"user_id": "u5", "text": "hello"})
    assert resp.status_code == 200
    assert resp.json()["error"] == "internal_error" and "Sorry" in resp.json()["reply"]
    assert "Traceback" not in resp.text and "ZeroDivision" not in resp.text


async def test_resent_message_is_answered_once(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue("only once")
    payload = {"user_id": "u6", "text": "hi", "client_message_id": "c-1"}
    first = (await client.post("/v1/chat", json=payload)).json()
    second = (await client.post("/v1/chat", json={**payload, "session_id": first["session_id"]})).json()
    assert second["message_id"] == first["message_id"] and second["reply"] == "only once"
    assert len(llm.calls) == 1
    history = (await client.get(f"/v1/sessions/{first['session_id']}/messages")).json()["messages"]
    assert len(history) == 2


async def test_bad_input_gets_a_4xx_with_an_actionable_message(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    cases = [
        ({"user_id": "u", "text": "   "}, 400, "text is empty"),
        ({"user_id": "u", "text": "x" * 4001}, 400, "limit is 4000"),
        ({"text": "hi"}, 422, "user_id: Field required"),
        ({"user_id": "u", "text": "hi", "session_id": "../etc"}, 422, "session_id"),
        ({"user_id": "u", "text": "hi", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ]
    for payload, status, fragment in cases:
        resp = await client.post("/v1/chat", json=payload)
        assert resp.status_code == status, payload
        error = resp.json()["error"]
        assert fragment in error["message"] and error["code"], (payload, error)
    not_json = await client.post("/v1/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.json()["error"]["message"]
    assert llm.calls == []


async def test_a_session_of_another_customer_is_not_found(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue("hello alice")
    alice = (await client.post("/v1/chat", json={"user_id": "alice", "text": "hi"})).json()
    resp = await client.post("/v1/chat", json={"user_id": "mallory", "session_id": alice["session_id"], "text": "hi"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert len(llm.calls) == 1


async def test_unknown_session_history_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/sessions/doesnotexist/messages")
    assert resp.status_code == 404 and "not found" in resp.json()["error"]["message"]


async def test_oversized_body_is_rejected_before_parsing(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"


async def test_health_readiness_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    schema = (await client.get("/openapi.json")).json()
    for path in ("/v1/chat", "/v1/chat/stream", "/v1/chat/completions", "/v1/sessions/{session_id}/messages"):
        assert path in schema["paths"], path
    assert "ChatRequest" in schema["components"]["schemas"]


async def test_readiness_names_redis_when_it_is_configured(tmp_path: Path, redis_url: str) -> None:
    """A replica whose Redis is gone must leave the load balancer: /readyz says 503 and names Redis."""
    for url, status, check in ((redis_url, 200, "ok"), ("redis://127.0.0.1:9/0", 503, "does not answer")):
        app = create_app(make_settings(tmp_path / str(status), redis_url=url), llm=ScriptedLLM())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client,
        ):
            ready = await client.get("/readyz")
            assert ready.status_code == status, ready.text
            assert check in ready.json()["checks"]["redis"]
            assert ready.json()["checks"]["database"] == "ok"
