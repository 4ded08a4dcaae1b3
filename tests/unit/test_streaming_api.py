"""Streaming over SSE, the customer WebSocket and the OpenAI-compatible facade."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from kefu.api.app import create_app
from kefu.api.streaming import Delta, Started, stream_turn
from kefu.errors import LLMTimeoutError
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import Completion, StreamDone, TextDelta, Usage
from kefu.pipeline import TurnInput
from kefu.services import Services
from tests.conftest import make_settings
from tests.support.live_server import live_server


def parse_sse(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


async def test_sse_streams_deltas_then_the_whole_record(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue("顺丰包邮，一般两到三天送达，偏远地区会慢一些。")
    resp = await client.post("/v1/chat/stream", json={"user_id": "s1", "text": "多久能到？"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("delta") >= 3
    deltas = "".join(json.loads(d)["text"] for n, d in events if n == "delta")
    done = json.loads(events[-1][1])
    assert deltas == done["reply"] == "顺丰包邮，一般两到三天送达，偏远地区会慢一些。"
    assert done["session_id"] == json.loads(events[0][1])["session_id"]


async def test_sse_llm_dying_mid_stream_ends_with_fallback_and_record(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    class DiesMidStream(ScriptedLLM):
        async def stream(self, messages, options):  # type: ignore[no-untyped-def,override]
            yield TextDelta("您好，")
            raise LLMTimeoutError("no tokens for 60s")

    services: Services = app.state.services
    dying = DiesMidStream()
    services.runner.deps.llms["chat"] = dying
    resp = await client.post("/v1/chat/stream", json={"user_id": "s2", "text": "会员积分怎么用？"})
    events = parse_sse(resp.text)
    done = json.loads(events[-1][1])
    assert events[-1][0] == "done" and done["error"] == "llm_timeout" and "抱歉" in done["reply"]
    stored = await services.store.list_messages(done["session_id"])
    assert stored[0].text == "会员积分怎么用？" and stored[1].error_code == "llm_timeout"


async def test_customer_leaving_mid_stream_cancels_the_turn_and_keeps_the_record(
    app: FastAPI, llm: ScriptedLLM
) -> None:
    services: Services = app.state.services
    llm.queue("这是一段很长很长的回复，" * 20)
    llm.chunk_chars = 2
    gen = stream_turn(services.runner, TurnInput(user_id="s3", channel="web", text="你好"))
    started = await anext(gen)
    assert isinstance(started, Started)
    assert isinstance(await anext(gen), Delta)
    await gen.aclose()  # what the SSE response does when the client disconnects
    await asyncio.sleep(0)
    stored = await services.store.list_messages(started.session_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].error_code == "cancelled"
    assert 0 < len(stored[1].text) < len("这是一段很长很长的回复，" * 20)


async def _next_json(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return frame


async def test_websocket_conversation(tmp_path: Path) -> None:
    llm = ScriptedLLM(["Hi! How can I help you with your order today?", "Sure."], chunk_chars=3)
    with live_server(create_app(make_settings(tmp_path), llm=llm)) as base:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/v1/ws?user_id=w1") as ws:
            hello = await _next_json(ws)
            assert hello["type"] == "session" and hello["owner"] == "bot"
            await ws.send(json.dumps({"type": "ping"}))
            assert await _next_json(ws) == {"type": "pong"}
            await ws.send(json.dumps({"type": "message", "text": "hello", "client_message_id": "m1"}))
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "reply":
                frames.append(await _next_json(ws))
            kinds = [f["type"] for f in frames]
            assert kinds[:2] == ["ack", "typing"] and kinds.count("delta") >= 3
            assert "".join(f["text"] for f in frames if f["type"] == "delta") == frames[-1]["reply"]
            assert frames[-1]["client_message_id"] == "m1"
            # A resend after a reconnect is answered from the store, not processed again.
            await ws.send(json.dumps({"type": "message", "text": "hello", "client_message_id": "m1"}))
            again = await _next_json(ws)
            assert again["type"] == "reply" and again["message_id"] == frames[-1]["message_id"]
            await ws.send("not json")
            assert (await _next_json(ws))["error"]["code"] == "invalid_request"
            await ws.send(json.dumps({"type": "message", "text": ""}))
            assert "empty" in (await _next_json(ws))["error"]["message"]
        # Reconnect to the same session: the history is there.
        async with connect(f"{ws_base}/v1/ws?user_id=w1&session_id={hello['session_id']}") as ws:
            assert (await _next_json(ws))["session_id"] == hello["session_id"]
        async with httpx.AsyncClient(base_url=base) as http:
            history = (await http.get(f"/v1/sessions/{hello['session_id']}/messages")).json()["messages"]
        assert [m["text"] for m in history] == ["hello", "Hi! How can I help you with your order today?"]
    assert len(llm.calls) == 1


async def test_websocket_rejects_missing_user_and_oversized_frames(tmp_path: Path) -> None:
    with live_server(create_app(make_settings(tmp_path), llm=ScriptedLLM())) as base:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/v1/ws") as ws:
            assert "user_id" in (await _next_json(ws))["error"]["message"]
        async with connect(f"{ws_base}/v1/ws?user_id=w2") as ws:
            await _next_json(ws)
            await ws.send(json.dumps({"type": "message", "text": "x" * 70_000}))
            assert (await _next_json(ws))["error"]["code"] == "payload_too_large"


async def test_openai_facade_keeps_one_session_per_user(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue(Completion("Hello from kefu", model="scripted", usage=Usage(12, 4)), "Second answer")
    body = {"model": "kefu", "user": "oa-1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    first = (await client.post("/v1/chat/completions", json=body)).json()
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"] == {"role": "assistant", "content": "Hello from kefu"}
    assert first["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    parts = [{"type": "text", "text": "and "}, {"type": "text", "text": "then?"}]
    body["messages"] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": parts},
    ]
    second = (await client.post("/v1/chat/completions", json=body)).json()
    assert second["kefu"]["session_id"] == first["kefu"]["session_id"]
    assert [m.content for m in llm.calls[1].messages[1:]] == ["hi", "Hello from kefu", "and then?"]


async def test_openai_facade_streams_chunks_and_done(client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
    llm.queue("Streaming works fine")
    body = {"stream": True, "user": "oa-2", "messages": [{"role": "user", "content": "stream please"}]}
    resp = await client.post("/v1/chat/completions", json=body)
    datas = [d for _, d in parse_sse(resp.text)]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Streaming works fine"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["kefu"]["session_id"]


async def test_openai_facade_needs_a_user_message(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]})
    assert resp.status_code == 400 and "user message" in resp.json()["error"]["message"]
    resp = await client.post("/v1/chat/completions", json={"messages": []})
    assert resp.status_code == 422


async def test_stream_done_without_deltas_is_handled(client: httpx.AsyncClient, app: FastAPI) -> None:
    class WholeAtOnce(ScriptedLLM):
        async def stream(self, messages, options):  # type: ignore[no-untyped-def,override]
            yield StreamDone(Completion("all at once", model="m"))

    services: Services = app.state.services
    services.runner.deps.llms["chat"] = WholeAtOnce()
    events = parse_sse((await client.post("/v1/chat/stream", json={"user_id": "s9", "text": "hi"})).text)
    assert json.loads(events[-1][1])["reply"] == "all at once"


async def test_a_resend_while_the_original_is_running_waits_for_it(app: FastAPI, llm: ScriptedLLM) -> None:
    services: Services = app.state.services
    llm.queue("只回答一次")
    llm.delay_s = 0.05
    session = await services.store.open_session(session_id="resend-session", user_id="r1", channel="web")
    turn = TurnInput(user_id="r1", channel="web", text="在吗", session_id=session.id, client_message_id="dup-1")
    first, second = await asyncio.gather(services.runner.run(turn), services.runner.run(turn))
    assert first.message_id == second.message_id and first.reply == second.reply == "只回答一次"
    assert second.duplicate and len(llm.calls) == 1
    assert [m.role for m in await services.store.list_messages(session.id)] == ["user", "assistant"]


async def test_websocket_drop_mid_reply_still_stores_the_whole_reply(tmp_path: Path) -> None:
    reply = "您的包裹已从上海发出，预计明天送达。" * 3
    llm = ScriptedLLM([reply], chunk_chars=2, delay_s=0.05)
    app = create_app(make_settings(tmp_path), llm=llm)
    with live_server(app) as base:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/v1/ws?user_id=drop1") as ws:
            session_id = (await _next_json(ws))["session_id"]
            await ws.send(json.dumps({"type": "message", "text": "会员积分怎么用", "client_message_id": "d1"}))
            while (await _next_json(ws))["type"] != "delta":
                pass
            ws.transport.abort()  # the network is gone (no close frame): not the customer saying goodbye
        # The socket is gone mid-reply; the turn finishes anyway and the reconnecting widget finds it.
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(100):
                history = (await http.get(f"/v1/sessions/{session_id}/messages")).json()["messages"]
                if len(history) == 2:
                    break
                await asyncio.sleep(0.05)
        assert [(m["role"], m["text"], m["error"]) for m in history] == [
            ("user", "会员积分怎么用", None),
            ("assistant", reply, None),
        ]
