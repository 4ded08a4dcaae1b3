"""Audit events off the hot path: queued by the turn, appended to the hash chain in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kefu.store.repository import AuditEntry, ConversationStore

log = logging.getLogger(__name__)
_BATCH = 200


class AuditLog:
    """Buffers model input/output events and writes each batch in one transaction (one chain lock, not one per turn)."""

    def __init__(self, store: ConversationStore, delay_s: float = 0.1) -> None:
        self._store = store
        self.delay_s = delay_s
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def record(self, entry: AuditEntry) -> None:
        self._queue.put_nowait(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < _BATCH - 1:
                # Let the turn that queued the event store its reply and answer first: at low load the store's
                # one writer would otherwise take the audit batch just before that turn's reply. (A full batch
                # waiting is written at once, so the queue cannot outgrow the writes.)
                await asyncio.sleep(self.delay_s)
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._store.audit_many(batch)
            except Exception:
                # Audit must not take turns down; the failure is visible in the log and in `kefu audit verify` counts.
                log.exception("writing %d audit events failed", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def flush(self) -> None:
        """Wait until every queued event is written."""
        await self._queue.join()

    async def aclose(self) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout=10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
