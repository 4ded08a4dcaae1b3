"""Every long-lived service kefu needs, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.auth.service import AccessServices, build_access
from kefu.config import Settings
from kefu.knowledge.service import KnowledgeService
from kefu.llm.base import LLMBackend
from kefu.llm.registry import ROLES, build_role_backends
from kefu.llm.types import LLMRole
from kefu.pipeline import TurnDeps, TurnResult, TurnRunner
from kefu.prompts import PromptLibrary
from kefu.shop import load_shop
from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate
from kefu.understanding.service import build_understanding

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

    async def aclose(self) -> None:
        if self.background_turns:
            await asyncio.wait(set(self.background_turns), timeout=_SHUTDOWN_GRACE_S)
        for backend in {id(b): b for b in self.llms.values()}.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing LLM backend %s failed", backend.name)
        if self.access is not None:
            await self.access.aclose()
        if self.knowledge is not None:
            await self.knowledge.aclose()
        await self.store.aclose()
        await self.engine.dispose()


async def build_services(settings: Settings, *, llm: LLMBackend | None = None) -> Services:
    """Build and start everything; `llm` replaces every configured model (tests, benchmarks)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shop = load_shop(settings.shop.dir)
    prompts = PromptLibrary(settings.chat.prompt_version)
    engine = create_engine(settings.effective_database_url)
    try:
        await migrate(engine)
        if llm is not None:
            llms = dict.fromkeys(ROLES, llm)
        else:
            # Loading a local model takes seconds of blocking work; keep the event loop free meanwhile.
            llms = await asyncio.to_thread(build_role_backends, settings.llm, settings.data_dir)
    except BaseException:
        await engine.dispose()
        raise
    try:
        access = await build_access(settings, engine)
    except BaseException:
        await engine.dispose()
        raise
    try:
        # The embedder is built once here; the index is loaded from the data dir (or Milvus) and source_dir synced.
        knowledge = await KnowledgeService.open(settings.knowledge, engine, settings.data_dir)
    except BaseException:
        await access.aclose()
        await engine.dispose()
        raise
    try:
        # Trains the intent classifier on first start (seconds), then loads it from the data dir's cache.
        understanding = await asyncio.to_thread(build_understanding, settings, prompts)
    except BaseException:
        await knowledge.aclose()
        await access.aclose()
        await engine.dispose()
        raise
    store = ConversationStore(engine, cipher=access.safety.cipher)
    access.bind_store(store)
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
    )
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        llms=llms,
        runner=TurnRunner(deps),
        access=access,
        knowledge=knowledge,
    )
