"""The scheduled purge on a real PostgreSQL server shared by several replicas: one purge per interval between them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate
from kefu.store.models import utcnow
from kefu.store.retention import SCHEDULE_ACTOR, purge_idle
from tests.unit.test_retention import idle_session, purges

pytestmark = pytest.mark.postgres


async def test_replicas_purging_at_the_same_moment_purge_once(postgres_url: str) -> None:
    engines = [create_engine(postgres_url) for _ in range(4)]
    await migrate(engines[0])
    replicas = [ConversationStore(engine) for engine in engines]
    try:
        for n in range(3):
            await idle_session(replicas[0], f"old-{n}", days=45)
        await idle_session(replicas[0], "recent", days=2)
        every = timedelta(hours=1)

        results = await asyncio.gather(*(purge_idle(r, 30, actor=SCHEDULE_ACTOR, every=every) for r in replicas))

        assert sorted(results, key=lambda r: r is None) == [3, None, None, None]
        audited = await purges(replicas[1], SCHEDULE_ACTOR)
        assert [e.data for e in audited] == [{"older_than_days": 30, "sessions_deleted": 3}]
        assert await replicas[2].count_sessions(tenant_id="default") == 1
        # A replica whose timer fires later in the same hour finds the purge done.
        assert await purge_idle(replicas[3], 30, actor=SCHEDULE_ACTOR, every=every) is None
        # An hour on, the purge runs again.
        assert await purge_idle(replicas[3], 30, actor=SCHEDULE_ACTOR, every=every, now=utcnow() + every) == 0
        assert (await replicas[3].verify_audit_chain())[0]
    finally:
        for replica in replicas:
            await replica.aclose()
        for engine in engines:
            await engine.dispose()
