"""Retention: conversations idle longer than `privacy.retention_days` are deleted, and every purge is audited.

`kefu privacy purge` runs it by hand; a server with `retention_days` set runs it every `privacy.purge_interval_s`
in the background. All workers and replicas run the schedule, and it purges once per interval between them: a purge
is skipped when the audit log shows a scheduled one within the interval, or while another one runs (PostgreSQL:
an advisory lock; SQLite: one writer at a time). The first run comes within a minute of start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime, timedelta

from kefu.config import PrivacySettings
from kefu.store.models import utcnow
from kefu.store.repository import ConversationStore

log = logging.getLogger(__name__)
SCHEDULE_ACTOR = "scheduler"
"""The audit actor of scheduled purges (the CLI's is `cli`)."""
_SLACK = 0.9
"""A scheduled purge counts as recent for 90% of the interval, so timers that drift a little still find it."""
_FIRST_RUN_SPREAD_S = 60.0


async def purge_idle(
    store: ConversationStore,
    days: int,
    *,
    actor: str,
    every: timedelta | None = None,
    now: datetime | None = None,
) -> int | None:
    """Delete conversations idle for more than `days` days, audited as `privacy.purge` by `actor`; returns the
    sessions deleted. With `every` (the schedule), None when a scheduled purge ran within it or is running."""
    now = now or utcnow()
    not_since = now - every * _SLACK if every is not None else None
    return await store.purge_audited(
        now - timedelta(days=days), actor=actor, data={"older_than_days": days}, not_since=not_since
    )


class ScheduledPurge:
    """The server's background task that applies `privacy.retention_days` every `privacy.purge_interval_s`."""

    def __init__(self, store: ConversationStore, days: int, interval_s: float) -> None:
        self.store = store
        self.days = days
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, store: ConversationStore, privacy: PrivacySettings) -> ScheduledPurge | None:
        """Start the schedule; None when no retention period is set (conversations are kept)."""
        if privacy.retention_days is None:
            return None
        job = cls(store, privacy.retention_days, privacy.purge_interval_s)
        job._task = asyncio.create_task(job._loop(), name="kefu-scheduled-purge")
        return job

    async def run_once(self) -> int | None:
        """One scheduled purge: sessions deleted, or None when another worker's purge made this one unnecessary."""
        return await purge_idle(self.store, self.days, actor=SCHEDULE_ACTOR, every=timedelta(seconds=self.interval_s))

    async def _loop(self) -> None:
        # Workers started together would all try at once: spread their first runs over up to a minute.
        await asyncio.sleep(random.uniform(0, min(self.interval_s, _FIRST_RUN_SPREAD_S)))
        while True:
            try:
                deleted = await self.run_once()
            except Exception as exc:
                # The store may be briefly unavailable: try again next time; the log says why.
                log.warning("scheduled purge failed (%s); next try in %.0f s", type(exc).__name__, self.interval_s)
            else:
                if deleted is not None:
                    log.info("scheduled purge deleted %d session(s) idle for more than %d day(s)", deleted, self.days)
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
