"""The answer cache of the workers of one `kefu serve --workers N` without Redis: each worker's own `MemoryStore`,
and every entry any of them stored also in the workers' shared `answers` table (`kefu.worker_memory`).

Without it each worker answers a question new to it once more (the whole pipeline: understanding, retrieval, the
model) before it can serve it from its cache. With it a worker that does not find a question in its own store looks
in the table, and keeps what it finds there (with its vector, so that the question's paraphrases find it too).
Paraphrases of an entry this worker never looked up are still found only in the worker that stored it: the table
is looked up by exact key. An entry too long for a slot stays in its own worker.

Expiry and knowledge versions hold as in one store: an entry past `ttl_s` is not taken from the table, and an entry
of older knowledge is under an older namespace's keys, which no lookup asks for again.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable

import numpy as np

from kefu.cache.entry import CachedAnswer
from kefu.cache.store import EvictionHook, Limits, MemoryStore, Vector
from kefu.worker_memory import SlotTable

_HEAD = struct.Struct("<32sH")  # the entry's semantic scope (a 32-character digest, or none), its vector's floats


def _encode(entry: CachedAnswer, scope: str | None, vector: Vector | None) -> bytes:
    if scope is None or vector is None or len(scope.encode()) != 32:
        scope, vector = None, None  # shared for exact lookups only
    floats = vector if vector is not None else np.zeros(0, dtype=np.float32)
    head = _HEAD.pack((scope or "").encode(), floats.shape[0])
    return head + np.ascontiguousarray(floats, dtype=np.float32).tobytes() + entry.dumps()


def _decode(payload: bytes) -> tuple[CachedAnswer, str | None, Vector | None]:
    scope_bytes, floats = _HEAD.unpack_from(payload, 0)
    start = _HEAD.size + 4 * floats
    vector = np.frombuffer(bytearray(payload[_HEAD.size : start]), dtype=np.float32) if floats else None
    scope = bytes(scope_bytes).rstrip(b"\0").decode() or None
    return CachedAnswer.loads(payload[start:]), scope, vector


class WorkerStore(MemoryStore):
    """A `MemoryStore` that also reads and writes the entries of the workers' shared table."""

    def __init__(
        self,
        table: SlotTable,
        limits: Limits,
        *,
        on_evict: EvictionHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limits, on_evict=on_evict, clock=clock)
        self.table = table
        self.shared_hits = 0
        """Entries this worker took from the table (stored by another worker)."""

    @staticmethod
    def _slot_key(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    async def get(self, key: str, *, touch: bool = True) -> CachedAnswer | None:
        entry = await super().get(key, touch=touch)
        if entry is not None:
            return entry
        payload = self.table.get(self._slot_key(key))
        if payload is None:
            return None
        try:
            entry, scope, vector = _decode(payload)
        except (ValueError, KeyError, TypeError, struct.error):
            return None  # written by another version of kefu
        if entry.created_at <= self._clock() - self.limits.ttl_s:
            return None
        if not await super().put(key, entry, scope=scope, vector=vector):
            return None
        self.shared_hits += 1
        return await super().get(key, touch=touch)

    async def put(
        self, key: str, entry: CachedAnswer, *, scope: str | None = None, vector: Vector | None = None
    ) -> bool:
        kept = await super().put(key, entry, scope=scope, vector=vector)
        if kept:
            self.table.put(self._slot_key(key), _encode(entry, scope, vector))
        return kept

    async def aclose(self) -> None:
        await super().aclose()
        self.table.close()
