"""Rate limits shared through a real Redis: two apps (two replicas) spend one budget."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kefu.api.app import create_app
from kefu.auth.ratelimit import RateLimitedError, RateLimiter
from kefu.config import RateLimitSettings
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings
from tests.support.live_server import live_server

pytestmark = pytest.mark.redis


async def test_limiter_counts_in_redis_and_says_when_to_retry(redis_url: str) -> None:
    limiter = RateLimiter(RateLimitSettings(per_customer="3/minute"), redis_url)
    who = f"t:{uuid4().hex}"
    for _ in range(3):
        await limiter.hit("customer", who)
    with pytest.raises(RateLimitedError) as raised:
        await limiter.hit("customer", who)
    assert 1 <= raised.value.retry_after_s <= 60
    await limiter.aclose()


async def test_two_replicas_share_one_budget(tmp_path: Path, redis_url: str) -> None:
    user = f"u-{uuid4().hex}"
    apps = [
        create_app(
            make_settings(
                tmp_path / name, redis_url=redis_url, rate_limit={"enabled": True, "per_customer": "2/minute"}
            ),
            llm=ScriptedLLM(default_reply="OK"),
        )
        for name in ("a", "b")
    ]
    codes = []
    for application in (apps[0], apps[1], apps[0]):
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
                resp = await client.post("/v1/chat", json={"user_id": user, "text": "hi"})
                codes.append(resp.status_code)
                if resp.status_code == 429:
                    assert int(resp.headers["retry-after"]) >= 1
    assert codes == [200, 200, 429]


async def test_websocket_over_its_message_budget_gets_an_error_frame_and_a_close(
    tmp_path: Path, redis_url: str
) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url, rate_limit={"enabled": True, "ws_messages": "1/minute"})
    with live_server(create_app(settings, llm=ScriptedLLM(default_reply="OK"))) as base:
        url = f"{base.replace('http://', 'ws://')}/v1/ws?user_id=ws-{uuid4().hex}"
        async with connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "session"
            await ws.send(json.dumps({"type": "message", "text": "hi", "client_message_id": "m1"}))
            while json.loads(await ws.recv())["type"] != "reply":
                pass
            await ws.send(json.dumps({"type": "message", "text": "again", "client_message_id": "m2"}))
            frame = json.loads(await ws.recv())
            assert frame["type"] == "error" and frame["error"]["code"] == "rate_limited"
            assert frame["client_message_id"] == "m2"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
