"""Live events through a real Redis: what one worker publishes reaches the sockets of another, across reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from kefu.api.app import create_app
from kefu.handoff.hub import AGENTS, RESYNC, LocalEventHub, RedisEventHub, session_channel
from kefu.llm.testing import ScriptedLLM
from tests.conftest import make_settings
from tests.support.live_server import free_port, live_server

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    """Channels of this test only: pub/sub is shared by every test using the same Redis server."""
    return f"kefu-test:{uuid4().hex[:8]}:"


@pytest.fixture
async def workers(redis_url: str, prefix: str) -> AsyncIterator[tuple[RedisEventHub, RedisEventHub]]:
    """Two hubs on one Redis, as two workers (or replicas) of one deployment have."""
    hubs = (RedisEventHub(redis_url, prefix=prefix), RedisEventHub(redis_url, prefix=prefix))
    for hub in hubs:
        hub.start()
    try:
        for hub in hubs:
            await asyncio.wait_for(hub.connected.wait(), timeout=10)
        yield hubs
    finally:
        for hub in hubs:
            await hub.aclose()


async def _next(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), timeout=5)


async def test_an_event_published_on_one_worker_reaches_subscribers_on_both(
    workers: tuple[RedisEventHub, RedisEventHub],
) -> None:
    a, b = workers
    channel = session_channel("s-1")
    event = {"type": "agent_message", "message": {"id": "m1", "role": "agent", "text": "您好，我来帮您"}, "n": None}
    async with a.subscribe(channel) as on_a, b.subscribe(channel) as on_b, b.subscribe(channel) as again_on_b:
        assert await a.publish(channel, event) == 2  # two workers' hubs subscribed
        assert [await _next(on_a), await _next(on_b), await _next(again_on_b)] == [event] * 3
        assert await b.publish(AGENTS, {"type": "queue"}) == 0  # nobody listens there
        assert on_a.empty() and on_b.empty()
    assert a.subscribers(channel) == b.subscribers(channel) == 0
    assert await a.publish(channel, event) == 0  # unsubscribed from Redis once the last socket left


async def test_deployments_on_other_channel_prefixes_do_not_hear_each_other(redis_url: str, prefix: str) -> None:
    ours, theirs = RedisEventHub(redis_url, prefix=prefix), RedisEventHub(redis_url, prefix=f"{prefix}other:")
    try:
        for hub in (ours, theirs):
            hub.start()
            await asyncio.wait_for(hub.connected.wait(), timeout=10)
        async with ours.subscribe(AGENTS) as mine, theirs.subscribe(AGENTS) as other:
            await ours.publish(AGENTS, {"type": "ticket_opened"})
            assert await _next(mine) == {"type": "ticket_opened"}
            await asyncio.sleep(0.2)
            assert other.empty()
    finally:
        await ours.aclose()
        await theirs.aclose()


def test_channels_default_to_the_redis_database_number() -> None:
    # Pub/sub ignores database numbers; kefu puts the number in the channel name so deployments stay apart.
    hub = RedisEventHub("redis://127.0.0.1:1/7")
    assert hub._wire(AGENTS) == "kefu:7:agents"


async def test_a_lost_connection_is_restored_and_subscribers_are_told_to_resync(
    workers: tuple[RedisEventHub, RedisEventHub], redis_url: str, prefix: str
) -> None:
    a, b = workers
    channel = session_channel("s-2")
    admin = Redis.from_url(redis_url)
    try:
        async with a.subscribe(channel) as on_a:
            # Cut worker A's subscriber connection the way a Redis restart or a network blip would.
            clients = await admin.client_list(_type="pubsub")
            [mine] = [c for c in clients if c.get("name") == a.client_name]
            await admin.client_kill_filter(_id=mine["id"])
            assert await _next(on_a) == {"type": RESYNC}  # resubscribed: events may have been missed meanwhile
            assert a.connected.is_set()
            await b.publish(channel, {"type": "status", "owner": "human"})
            assert await _next(on_a) == {"type": "status", "owner": "human"}
    finally:
        await admin.aclose()


async def test_without_redis_events_are_lost_and_nothing_fails(caplog: pytest.LogCaptureFixture) -> None:
    hub = RedisEventHub(f"redis://127.0.0.1:{free_port()}/0", backoff_s=(0.05, 0.1))
    hub.start()
    try:
        with caplog.at_level(logging.WARNING, logger="kefu.handoff.hub"):
            async with hub.subscribe(AGENTS) as events:  # returns at once: subscribed when Redis comes back
                assert await hub.publish(AGENTS, {"type": "ticket_opened"}) == 0
                await asyncio.sleep(0.3)
                assert events.empty() and not hub.connected.is_set()
        assert any("live event for agents lost" in r.getMessage() for r in caplog.records)
        assert any("cannot reach Redis for live events" in r.getMessage() for r in caplog.records)
    finally:
        await hub.aclose()


async def test_the_in_process_hub_drops_the_oldest_events_of_a_slow_subscriber() -> None:
    hub = LocalEventHub()
    async with hub.subscribe(AGENTS) as events:
        for n in range(300):
            await hub.publish(AGENTS, {"n": n})
        assert events.qsize() == 256 and events.get_nowait() == {"n": 44}
    assert hub.subscribers(AGENTS) == 0
    await hub.aclose()


async def test_a_console_gets_a_fresh_queue_when_its_worker_reconnects_to_redis(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url=redis_url, dialogue={"now": "2026-03-02T10:00:00+08:00"})
    application = create_app(settings, llm=ScriptedLLM(default_reply="OK"))
    admin = Redis.from_url(redis_url)
    try:
        with live_server(application) as base:
            hub = application.state.services.handoff.hub
            assert isinstance(hub, RedisEventHub)
            async with connect(f"{base.replace('http://', 'ws://')}/v1/console/ws") as console:
                assert json.loads(await asyncio.wait_for(console.recv(), timeout=10)) == {
                    "type": "queue",
                    "tickets": [],
                }
                async with httpx.AsyncClient(base_url=base) as http:
                    body = (await http.post("/v1/chat", json={"user_id": "resync-1", "text": "转人工"})).json()
                assert body["handoff"] is True
                assert json.loads(await asyncio.wait_for(console.recv(), timeout=10))["type"] == "ticket_opened"
                assert len(json.loads(await asyncio.wait_for(console.recv(), timeout=10))["tickets"]) == 1
                [mine] = [c for c in await admin.client_list(_type="pubsub") if c.get("name") == hub.client_name]
                await admin.client_kill_filter(_id=mine["id"])
                # Whatever was missed while the connection was down, the queue as it stands now arrives unasked.
                resynced = json.loads(await asyncio.wait_for(console.recv(), timeout=10))
                assert resynced["type"] == "queue" and [t["session_id"] for t in resynced["tickets"]] == [
                    body["session_id"]
                ]
    finally:
        await admin.aclose()
