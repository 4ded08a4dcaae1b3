"""A customer who leaves mid-reply ends the model request: the upstream HTTP stream is closed, the backend's slot
is freed, and the turn is stored as cancelled. A dropped network (not a goodbye) lets the reply finish instead.

Everything is real: kefu under uvicorn, its `openai` backend with the concurrency limiter, and an OpenAI-compatible
server on 127.0.0.1 that streams slowly and sees its client hang up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from kefu.api.app import create_app
from tests.conftest import make_settings
from tests.support.live_server import live_server
from tests.support.streaming_llm import Stream, StreamingLLMServer, streaming_llm_server

QUESTION = "会员积分怎么用？"
WAIT_S = 30.0
"""Generous bounds for things that happen at once on an idle machine; nothing here asserts a duration."""


@pytest.fixture
def upstream() -> Iterator[StreamingLLMServer]:
    with streaming_llm_server(interval_s=0.05, chunks=400) as server:  # 20 s per reply unless the client hangs up
        yield server


@pytest.fixture
def kefu(upstream: StreamingLLMServer, tmp_path: Path) -> Iterator[str]:
    llm = {"backend": "openai", "base_url": upstream.base_url, "model": "stub", "max_concurrency": 1}
    with live_server(create_app(make_settings(tmp_path, llm=llm))) as base:
        yield base


def streamed(upstream: StreamingLLMServer) -> list[Stream]:
    return [s for s in upstream.streams if s.body.get("stream")]


async def wait_for(event: Any) -> bool:
    return bool(await asyncio.to_thread(event.wait, WAIT_S))


async def stored_reply(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    for _ in range(int(WAIT_S / 0.05)):
        messages = (await http.get(f"/v1/sessions/{session_id}/messages")).json()["messages"]
        if len(messages) == 2:
            reply: dict[str, Any] = messages[1]
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reply stored for session {session_id}")


async def llm_slots(http: httpx.AsyncClient) -> tuple[float, float]:
    """(in flight, waiting) of the stub backend, as /metrics shows them once they have settled."""
    values: dict[str, float] = {}
    for _ in range(int(WAIT_S / 0.05)):
        text = (await http.get("/metrics")).text
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in ("kefu_llm_in_flight", "kefu_llm_queue_length") and s.labels == {"backend": "openai:stub"}
        }
        if values.get("kefu_llm_in_flight") == 0:
            break
        await asyncio.sleep(0.05)
    return values["kefu_llm_in_flight"], values["kefu_llm_queue_length"]


async def answered_in_full(http: httpx.AsyncClient, upstream: StreamingLLMServer, user_id: str) -> dict[str, Any]:
    """A later customer's streamed turn; with max_concurrency 1 it only gets the model if the slot was freed."""
    upstream.chunks = 3
    resp = await http.post("/v1/chat/stream", json={"user_id": user_id, "text": QUESTION})
    done: dict[str, Any] = json.loads(resp.text.strip().split("data:")[-1])
    return done


async def test_sse_client_leaving_mid_reply_closes_the_upstream_stream(kefu: str, upstream: StreamingLLMServer) -> None:
    async with httpx.AsyncClient(base_url=kefu, timeout=WAIT_S) as http:
        session_id = None
        async with http.stream("POST", "/v1/chat/stream", json={"user_id": "sse-gone", "text": QUESTION}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:") and session_id is None:
                    session_id = json.loads(line[5:])["session_id"]
                if line == "event: delta":
                    break  # the reply is streaming: the customer closes the page
        assert session_id is not None
        (stream,) = streamed(upstream)
        assert await wait_for(stream.hung_up), "kefu kept the model request open after the customer left"
        assert not stream.finished.is_set()
        reply = await stored_reply(http, session_id)
        assert reply["role"] == "assistant" and reply["error"] == "cancelled"
        assert reply["text"].startswith("好的，")  # what had been said is kept
        assert await llm_slots(http) == (0, 0)
        later = await answered_in_full(http, upstream, "sse-next")
        assert later["error"] is None and later["reply"] == "好的，好的，好的，"


async def _next_json(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=WAIT_S))
    return frame


async def _ask_until_streaming(ws: ClientConnection) -> str:
    session_id: str = (await _next_json(ws))["session_id"]
    await ws.send(json.dumps({"type": "message", "text": QUESTION, "client_message_id": "m1"}))
    while (await _next_json(ws))["type"] != "delta":
        pass
    return session_id


@pytest.mark.parametrize("code", [1000, 1001])
async def test_websocket_closed_by_the_customer_mid_reply_cancels_the_model_request(
    kefu: str, upstream: StreamingLLMServer, code: int
) -> None:
    ws_base = kefu.replace("http://", "ws://")
    async with connect(f"{ws_base}/v1/ws?user_id=ws-gone-{code}") as ws:
        session_id = await _ask_until_streaming(ws)
        await ws.close(code=code)  # 1001: the browser closed or left the page
    async with httpx.AsyncClient(base_url=kefu, timeout=WAIT_S) as http:
        (stream,) = streamed(upstream)
        assert await wait_for(stream.hung_up), "kefu kept the model request open after the customer left"
        reply = await stored_reply(http, session_id)
        assert reply["error"] == "cancelled" and reply["text"].startswith("好的，")
        assert await llm_slots(http) == (0, 0)
        later = await answered_in_full(http, upstream, f"ws-next-{code}")
        assert later["error"] is None


async def test_websocket_lost_to_the_network_lets_the_reply_finish(kefu: str, upstream: StreamingLLMServer) -> None:
    upstream.chunks = 30
    ws_base = kefu.replace("http://", "ws://")
    async with connect(f"{ws_base}/v1/ws?user_id=ws-blip") as ws:
        session_id = await _ask_until_streaming(ws)
        ws.transport.abort()  # no close frame: what a dead mobile connection looks like to the server
    (stream,) = streamed(upstream)
    assert await wait_for(stream.finished)
    assert not stream.hung_up.is_set()
    async with httpx.AsyncClient(base_url=kefu, timeout=WAIT_S) as http:
        reply = await stored_reply(http, session_id)
        assert reply["error"] is None and reply["text"] == "好的，" * 30  # the reconnecting widget finds all of it
