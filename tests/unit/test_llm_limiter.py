"""The per-backend concurrency limit: a fair, bounded queue, `llm_busy` when it is full, slots freed on every exit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kefu.api.app import create_app
from kefu.errors import LLMBusyError
from kefu.llm.limiter import FairLimiter, LimitedLLM, fair_share, limiters_of
from kefu.llm.testing import ScriptedLLM
from kefu.llm.types import GenerationOptions, Message, StreamDone, TextDelta
from kefu.services import Services
from tests.conftest import make_settings

OPTIONS = GenerationOptions()


def limited(llm: ScriptedLLM, *, limit: int = 1, queue: int = 64, timeout_s: float = 30.0) -> LimitedLLM:
    return LimitedLLM(llm, FairLimiter(llm.name, max_concurrency=limit, max_queue=queue, timeout_s=timeout_s))


async def ask(backend: LimitedLLM, tenant: str, conversation: str, text: str) -> str:
    with fair_share(tenant, conversation):
        return (await backend.complete([Message("user", text)], OPTIONS)).text


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_more_requests_reach_the_backend_than_the_limit() -> None:
    llm = ScriptedLLM(default_reply="ok")
    llm.gate = asyncio.Event()
    backend = limited(llm, limit=3)
    calls = [asyncio.create_task(ask(backend, "t", f"c{i}", f"q{i}")) for i in range(10)]
    await settle()
    assert llm.active == 3 and backend.limiter.in_flight == 3 and backend.limiter.waiting == 7
    llm.gate.set()
    assert await asyncio.gather(*calls) == ["ok"] * 10
    assert llm.max_active == 3
    assert (backend.limiter.in_flight, backend.limiter.waiting) == (0, 0)


async def test_a_busy_conversation_does_not_starve_the_others() -> None:
    llm = ScriptedLLM(default_reply="ok")
    llm.gate = asyncio.Event()
    backend = limited(llm, limit=1)
    first = asyncio.create_task(ask(backend, "shop-a", "chatty", "chatty-0"))
    await settle()
    # One conversation floods the queue first; two other customers (one of another tenant) ask after it.
    waiting = [asyncio.create_task(ask(backend, "shop-a", "chatty", f"chatty-{i}")) for i in range(1, 5)]
    await settle()
    waiting.append(asyncio.create_task(ask(backend, "shop-a", "quiet", "quiet-0")))
    waiting.append(asyncio.create_task(ask(backend, "shop-b", "other-tenant", "other-0")))
    await settle()
    llm.gate.set()
    await asyncio.gather(first, *waiting)
    order = [call.messages[0].content for call in llm.calls]
    # Round-robin across tenants, then across a tenant's conversations: the latecomers get the model after one more
    # of the chatty conversation's requests, not after its whole backlog.
    assert order == ["chatty-0", "chatty-1", "other-0", "quiet-0", "chatty-2", "chatty-3", "chatty-4"]


async def test_a_full_queue_refuses_at_once_with_llm_busy() -> None:
    llm = ScriptedLLM(default_reply="ok")
    llm.gate = asyncio.Event()
    backend = limited(llm, limit=1, queue=1)
    holder = asyncio.create_task(ask(backend, "t", "a", "1"))
    waiter = asyncio.create_task(ask(backend, "t", "b", "2"))
    await settle()
    with pytest.raises(LLMBusyError) as refused:
        await ask(backend, "t", "c", "3")
    assert refused.value.code == "llm_busy" and refused.value.reason == "queue_full"
    assert "KEFU_LLM__MAX_CONCURRENCY" in str(refused.value)
    llm.gate.set()
    assert await asyncio.gather(holder, waiter) == ["ok", "ok"]


async def test_waiting_too_long_fails_with_llm_busy_and_leaves_the_queue() -> None:
    llm = ScriptedLLM(default_reply="ok")
    llm.gate = asyncio.Event()
    backend = limited(llm, limit=1, timeout_s=0.05)
    holder = asyncio.create_task(ask(backend, "t", "a", "1"))
    await settle()
    with pytest.raises(LLMBusyError) as refused:
        await ask(backend, "t", "b", "2")
    assert refused.value.reason == "timeout"
    assert backend.limiter.waiting == 0
    llm.gate.set()
    await holder
    assert await ask(backend, "t", "b", "3") == "ok"  # nothing was leaked: the slot is free again
    assert backend.limiter.in_flight == 0


async def test_cancelled_callers_give_back_their_place_and_their_slot() -> None:
    llm = ScriptedLLM(default_reply="ok")
    llm.gate = asyncio.Event()
    backend = limited(llm, limit=1)
    holder = asyncio.create_task(ask(backend, "t", "a", "1"))
    waiter = asyncio.create_task(ask(backend, "t", "b", "2"))
    await settle()
    waiter.cancel()  # e.g. the intent fallback's own timeout, or the customer leaving while queued
    holder.cancel()  # the customer leaving while the model answers
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert (backend.limiter.in_flight, backend.limiter.waiting) == (0, 0)
    llm.gate.set()
    assert await ask(backend, "t", "c", "3") == "ok"
    assert [c.messages[0].content for c in llm.calls] == ["3"]


async def test_a_stream_holds_its_slot_until_it_is_closed() -> None:
    llm = ScriptedLLM(["a fairly long streamed reply"], chunk_chars=2)
    backend = limited(llm, limit=1)
    events = backend.stream([Message("user", "hi")], OPTIONS)
    assert isinstance(await anext(events), TextDelta)
    assert backend.limiter.in_flight == 1 and llm.active == 1
    await events.aclose()  # the reader went away mid-reply
    assert backend.limiter.in_flight == 0 and llm.active == 0
    llm.queue("next")
    finished = [e async for e in backend.stream([Message("user", "again")], OPTIONS)]
    assert isinstance(finished[-1], StreamDone) and finished[-1].completion.text == "next"


async def test_a_busy_backend_gives_the_customer_the_fallback_and_operators_the_metrics(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, llm={"backend": "testing", "max_concurrency": 1, "max_queue": 0})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        (limiter,) = limiters_of(services.llms.values())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            async with limiter.slot():  # every slot taken, no room to wait
                busy = (await client.post("/v1/chat", json={"user_id": "b1", "text": "会员积分怎么用？"})).json()
                scrape = (await client.get("/metrics")).text
            calm = (await client.post("/v1/chat", json={"user_id": "b2", "text": "会员积分怎么用？"})).json()
        stored = await services.store.list_messages(busy["session_id"])
        apology = services.runner.deps.prompts.reply("fallback_error", "zh")
    assert busy["error"] == "llm_busy" and busy["reply"] == apology  # the usual apology in the customer's language
    assert [(m.role, m.error_code) for m in stored] == [("user", None), ("assistant", "llm_busy")]
    assert calm["error"] is None and calm["reply"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    backend = (("backend", limiter.backend),)
    assert samples[("kefu_llm_in_flight", backend)] == 1
    assert samples[("kefu_llm_queue_length", backend)] == 0
    assert samples[("kefu_llm_max_concurrency", backend)] == 1
    assert samples[("kefu_llm_busy_total", (("backend", limiter.backend), ("reason", "queue_full")))] == 1
    assert samples[("kefu_turn_errors_total", (("kind", "llm_busy"),))] == 1
