"""Retention: the server purges conversations past `privacy.retention_days` on its own, audited like a manual purge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from kefu.api.app import create_app
from kefu.errors import NotFoundError
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate
from kefu.store.models import AuditEvent, ChatSession, utcnow
from kefu.store.retention import SCHEDULE_ACTOR, purge_idle
from tests.conftest import make_settings

DEADLINE_S = 30.0
"""How long to wait for the background task at most (polling, not a timing assertion)."""


async def idle_session(store: ConversationStore, user_id: str, days: int) -> str:
    """A conversation with one message, last active `days` days ago."""
    session = await store.open_session(session_id=None, user_id=user_id, channel="web")
    await store.add_customer_message(session, "我的快递到哪了？")
    async with store.engine.begin() as conn:
        await conn.execute(
            update(ChatSession).where(ChatSession.id == session.id).values(updated_at=utcnow() - timedelta(days=days))
        )
    return session.id


async def purges(store: ConversationStore, actor: str) -> list[AuditEvent]:
    return [e for e in await store.audit_events(tenant_id="default", action="privacy.purge") if e.actor == actor]


async def test_the_server_purges_old_conversations_on_its_schedule_and_audits_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, privacy={"retention_days": 30, "purge_interval_s": 0.2})
    app = create_app(settings, llm=ScriptedLLM())
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        store = services.store
        old = await idle_session(store, "old-customer", days=40)
        recent = await idle_session(store, "recent-customer", days=3)

        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not any(e.data["sessions_deleted"] for e in await purges(store, SCHEDULE_ACTOR)):
            assert asyncio.get_running_loop().time() < deadline, "the scheduled purge never deleted the old session"
            await asyncio.sleep(0.05)

        with pytest.raises(NotFoundError):
            await store.get_session(old)
        assert await store.list_messages(old) == []
        assert [m.text for m in await store.list_messages(recent)] == ["我的快递到哪了？"]
        deleting = [e for e in await purges(store, SCHEDULE_ACTOR) if e.data["sessions_deleted"]]
        assert [e.data for e in deleting] == [{"older_than_days": 30, "sessions_deleted": 1}]
        assert (await store.verify_audit_chain())[0]


async def test_a_server_without_a_retention_period_keeps_everything(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), llm=ScriptedLLM())
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        assert services.retention is None
        old = await idle_session(services.store, "kept", days=4000)
        assert [m.text for m in await services.store.list_messages(old)] == ["我的快递到哪了？"]


async def test_a_scheduled_purge_runs_once_per_interval_between_workers(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}")
    await migrate(engine)
    worker_a, worker_b = ConversationStore(engine), ConversationStore(engine)
    try:
        await idle_session(worker_a, "old", days=40)
        every = timedelta(hours=1)
        assert await purge_idle(worker_a, 30, actor=SCHEDULE_ACTOR, every=every) == 1
        await idle_session(worker_a, "old-too", days=40)
        # Another worker's timer fires within the hour: the purge already ran, nothing is done or audited.
        assert await purge_idle(worker_b, 30, actor=SCHEDULE_ACTOR, every=every) is None
        assert len(await purges(worker_b, SCHEDULE_ACTOR)) == 1
        # An hour later the next one purges again.
        later = utcnow() + every
        assert await purge_idle(worker_b, 30, actor=SCHEDULE_ACTOR, every=every, now=later) == 1
        assert [e.data["sessions_deleted"] for e in await purges(worker_a, SCHEDULE_ACTOR)] == [1, 1]
    finally:
        await worker_a.aclose()
        await worker_b.aclose()
        await engine.dispose()


def test_kefu_privacy_purge_uses_the_same_audited_purge(tmp_path: Path) -> None:
    import os

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite+aiosqlite:///{data_dir / 'kefu.db'}"

    async def prepare() -> None:
        engine = create_engine(url)
        await migrate(engine)
        store = ConversationStore(engine)
        await idle_session(store, "old", days=40)
        await idle_session(store, "recent", days=1)
        await store.aclose()
        await engine.dispose()

    asyncio.run(prepare())
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    env.update({"KEFU_DATA_DIR": str(data_dir), "KEFU_DATABASE_URL": url, "KEFU_CONFIG": str(tmp_path / "none.yaml")})
    result = subprocess.run(
        [sys.executable, "-m", "kefu", "privacy", "purge", "--older-than-days", "30"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "purged 1 session(s) idle for more than 30 day(s)" in result.stdout

    async def audited() -> list[AuditEvent]:
        engine = create_engine(url)
        store = ConversationStore(engine)
        try:
            return await purges(store, "cli")
        finally:
            await store.aclose()
            await engine.dispose()

    assert [e.data for e in asyncio.run(audited())] == [{"older_than_days": 30, "sessions_deleted": 1}]
