"""The answer cache shared through a real Redis: two replicas of one deployment (same PostgreSQL, same Redis) serve
each other's answers, follow each other's knowledge changes, and the shared cache keeps its limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from kefu.api.app import create_app
from kefu.cache import CachedAnswer, Limits
from kefu.cache.redis_store import RedisStore
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings
from tests.unit.test_answer_cache import ANSWER, FAQ, POLICY, QUESTION, SHOWN
from tests.unit.test_metrics import scrape, value

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """Keys of this test only (the Redis server is shared by every test); removed afterwards."""
    name = f"kefu-test:{uuid.uuid4().hex[:8]}:answers:"
    yield name
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    root = tmp_path / "knowledge"
    (root / "en").mkdir(parents=True)
    (root / "en" / "returns.md").write_text(POLICY)
    (root / "faq.csv").write_text(FAQ)
    return root


class Replica:
    """One kefu replica: its app, its HTTP client and its model."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, llm: ScriptedLLM) -> None:
        self.app, self.client, self.llm = app, client, llm

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def ask(self, text: str, user: str) -> tuple[dict[str, Any], Any]:
        resp = await self.client.post("/v1/chat", json={"user_id": user, "text": text})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body, (await self.services.store.list_messages(body["session_id"]))[-1]


@pytest.fixture
async def replicas(
    tmp_path: Path, postgres_url: str, redis_url: str, prefix: str, knowledge_dir: Path
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas: one database and one Redis, each its own data dir (its own copy of the knowledge index)."""
    async with AsyncExitStack() as stack:
        made = []
        for name in ("a", "b"):
            settings = make_settings(
                tmp_path / name,
                database_url=postgres_url,
                redis_url=redis_url,
                dialogue={"enabled": False},
                # The hashing embedder's similarities are lower than a real model's: thresholds to match it.
                knowledge={
                    "source_dir": knowledge_dir,
                    "embedding": {"backend": "hashing"},
                    "min_relevance": 0.3,
                    "min_relevance_low": 0.2,
                    "rewrite": "heuristic",
                },
                answer_cache={"redis_prefix": prefix, "semantic_threshold": 0.9},
            )
            llm = ScriptedLLM()
            app = create_app(settings, llm=llm)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test")
            )
            made.append(Replica(app, client, llm))
        yield made[0], made[1]


async def test_an_answer_written_by_one_replica_is_served_by_the_other(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    assert a.services.answer_cache is not None and a.services.answer_cache.backend == "redis"
    a.llm.queue(ANSWER)
    first, _ = await a.ask(QUESTION, "alice")
    assert first["reply"] == SHOWN

    exact, reply = await b.ask("can i return an unused item", "bob")
    assert exact["reply"] == SHOWN and exact["citations"] == first["citations"]
    assert reply.route == "cache" and reply.trace["cache"]["hit"] == "exact"

    paraphrase, reply = await b.ask("can I return an unused item please", "carol")
    assert paraphrase["reply"] == SHOWN and paraphrase["citations"] == first["citations"]
    assert reply.route == "cache" and reply.trace["cache"]["hit"] == "semantic"
    assert b.llm.calls == [] and len(a.llm.calls) == 1

    # Closer in characters than the paraphrase, but "used" is not "unused": the other replica asks its model.
    b.llm.queue("Used items cannot be returned without a reason [1].")
    _, reply = await b.ask("Can I return a used item?", "dave")
    assert reply.route != "cache" and len(b.llm.calls) == 1

    samples = await scrape(b.client)
    assert value(samples, "kefu_answer_cache_entries", backend="redis") == 2  # both answers, for both replicas
    assert value(samples, "kefu_answer_cache_lookups_total", kind="exact", result="hit") == 1
    assert value(samples, "kefu_answer_cache_lookups_total", kind="semantic", result="hit") == 1


async def test_a_knowledge_change_on_one_replica_invalidates_the_answers_for_both(
    replicas: tuple[Replica, Replica], knowledge_dir: Path
) -> None:
    a, b = replicas
    a.llm.queue(ANSWER)
    await a.ask(QUESTION, "alice")
    _, reply = await b.ask(QUESTION, "bob")
    assert reply.route == "cache"

    (knowledge_dir / "en" / "returns.md").write_text(POLICY.replace("within 7 days", "within 15 days"))
    assert (await a.client.post("/v1/admin/kb/sync")).json()["updated"] == ["en/returns.md"]

    b.llm.queue("You can return an unused item within 15 days of delivery [1].")
    body, reply = await b.ask(QUESTION, "carol")
    assert reply.route == "knowledge" and "15 days" in body["reply"]
    cache = b.services.answer_cache
    assert cache is not None
    stats = await cache.stats()
    assert stats is not None and stats.entries == 1, "the old answer was dropped, the new one kept"
    _, reply = await a.ask(QUESTION, "dave")
    assert reply.route == "cache" and "15 days" in reply.text


def _answer(n: int, *, size: int = 10, version: int = 1) -> CachedAnswer:
    return CachedAnswer(
        reply="x" * size,
        citations=[],
        intent="return_policy",
        route="faq",
        language="en",
        question=f"question {n}",
        knowledge_version=version,
    )


async def test_the_shared_cache_keeps_its_limits_and_evicts_the_least_used(redis_url: str, prefix: str) -> None:
    evicted: list[tuple[str, int]] = []
    limits = Limits(max_entries=4, max_bytes=100_000, ttl_s=3600)
    store = RedisStore.from_url(redis_url, limits, prefix=prefix, on_evict=lambda r, n: evicted.append((r, n)))
    other_worker = RedisStore.from_url(redis_url, limits, prefix=prefix)
    try:
        for n in range(4):
            assert await store.put(f"k{n}", _answer(n))
        for _ in range(3):
            assert await other_worker.get("k0") is not None  # the oldest entry is the most popular
        assert await store.get("k1") is not None
        await store.put("k4", _answer(4))
        assert await other_worker.get("k2", touch=False) is None, "the least used of the least recently used"
        assert await other_worker.get("k0", touch=False) is not None
        await store.put("k5", _answer(5))
        assert await store.get("k3", touch=False) is None
        assert (await other_worker.stats()).entries == 4 and evicted == [("capacity", 1), ("capacity", 1)]

        # Bytes: big entries push the others out; one too big for the whole cache is refused.
        big = RedisStore.from_url(redis_url, Limits(100, 3000, 3600), prefix=f"{prefix}big:")
        try:
            for n in range(6):
                assert await big.put(f"b{n}", _answer(n, size=800))
                assert (await big.stats()).bytes <= 3000
            assert (await big.stats()).entries == 2
            assert not await big.put("huge", _answer(9, size=5000))
        finally:
            await big.aclose()

        # Older knowledge is dropped; nothing of it is left for the other worker.
        assert await store.put("v2", _answer(9, version=2))  # one more: one of the four went
        assert await other_worker.forget_before(2) == 3
        assert (await store.stats()).entries == 1 and await store.get("k0") is None
    finally:
        await store.aclose()
        await other_worker.aclose()


async def test_an_entry_expires_after_its_ttl(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, Limits(10, 100_000, ttl_s=1), prefix=prefix)
    try:
        assert await store.put("k", _answer(1))
        assert await store.get("k") is not None
        await asyncio.sleep(1.2)
        assert await store.get("k") is None
        assert (await store.stats()).entries == 0, "its bookkeeping went with it"
    finally:
        await store.aclose()
