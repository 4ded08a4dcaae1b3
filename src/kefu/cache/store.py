"""Where cached answers live: the interface every backend implements, and the in-process backend.

Eviction is the same everywhere: among the `EVICTION_WINDOW` least recently used entries, the one hit least
often goes first (LRU picks the candidates, LFU the victim); the others in that window have their hit counts
halved, so an entry that was popular once cannot stay forever. Entries also expire `ttl_s` after they were
written, and entries of an older knowledge version are dropped as soon as a newer version is seen.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kefu.cache.entry import ENTRY_OVERHEAD_BYTES, CachedAnswer

Vector = npt.NDArray[np.float32]
EVICTION_WINDOW = 8
"""How many of the least recently used entries compete on hit counts when one must go."""

EvictionHook = Callable[[str, int], None]
"""Told how many entries left and why: `capacity` (entries or bytes over the limit), `expired`, `invalidated`."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a store keeps and for how long."""

    max_entries: int
    max_bytes: int
    ttl_s: float


def entry_size(data: bytes, vector: Vector | None) -> int:
    return len(data) + ENTRY_OVERHEAD_BYTES + (vector.nbytes if vector is not None else 0)


class AnswerStore(Protocol):
    """Keeps entries by id, with an optional vector in a semantic scope; bounded by `Limits`."""

    name: str

    async def get(self, key: str, *, touch: bool = True) -> CachedAnswer | None:
        """The entry, counted as used (recency and frequency) unless `touch` is off; None when absent or expired."""
        ...

    async def put(
        self, key: str, entry: CachedAnswer, *, scope: str | None = None, vector: Vector | None = None
    ) -> bool:
        """Keep (or replace) an entry, evicting others to stay within the limits; False when it was not kept."""
        ...

    async def nearest(self, scope: str, vector: Vector, limit: int) -> list[tuple[str, float]]:
        """The ids of the entries in `scope` whose vectors are closest to `vector` (cosine, best first), with it."""
        ...

    async def forget_before(self, knowledge_version: int) -> int:
        """Drop every entry written for an older knowledge version; how many went."""
        ...

    async def stats(self) -> StoreStats: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Slot:
    entry: CachedAnswer
    size: int
    scope: str | None
    hits: int = 0


@dataclass(slots=True)
class _Scope:
    """The vectors of one semantic scope, stacked into a matrix when first searched after a change."""

    vectors: dict[str, Vector] = field(default_factory=dict)
    _ids: list[str] = field(default_factory=list)
    _matrix: Vector | None = None

    def add(self, key: str, vector: Vector) -> None:
        self.vectors[key] = vector
        self._matrix = None

    def discard(self, key: str) -> None:
        if self.vectors.pop(key, None) is not None:
            self._matrix = None

    def nearest(self, vector: Vector, limit: int) -> list[tuple[str, float]]:
        if not self.vectors:
            return []
        if self._matrix is None:
            self._ids = list(self.vectors)
            self._matrix = np.vstack([self.vectors[k] for k in self._ids]).astype(np.float32, copy=False)
        return closest(self._ids, self._matrix, vector, limit)


def closest(ids: list[str], matrix: Vector, vector: Vector, limit: int) -> list[tuple[str, float]]:
    """The `limit` rows of `matrix` most similar to `vector` (dot product of normalised vectors), best first."""
    sims = matrix @ vector
    order = np.argsort(-sims)[:limit]
    return [(ids[i], float(sims[i])) for i in order]


class MemoryStore:
    """The in-process backend: one per worker, nothing shared (use Redis for several workers or replicas)."""

    name = "memory"

    def __init__(
        self, limits: Limits, *, on_evict: EvictionHook | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.limits = limits
        self._on_evict = on_evict or (lambda reason, count: None)
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        """Least recently used first."""
        self._born: OrderedDict[str, float] = OrderedDict()
        """Oldest written first: expiry walks it from the front."""
        self._scopes: dict[str, _Scope] = {}
        self._bytes = 0

    async def get(self, key: str, *, touch: bool = True) -> CachedAnswer | None:
        self._expire()
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.entry.created_at <= self._clock() - self.limits.ttl_s:
            self._remove(key)  # written out of order (a slow answer after a quick one): expired all the same
            self._on_evict("expired", 1)
            return None
        if touch:
            slot.hits += 1
            self._slots.move_to_end(key)
        return slot.entry

    async def put(
        self, key: str, entry: CachedAnswer, *, scope: str | None = None, vector: Vector | None = None
    ) -> bool:
        size = entry_size(entry.dumps(), vector)
        if size > self.limits.max_bytes:
            return False
        self._remove(key)
        self._slots[key] = _Slot(entry, size, scope if vector is not None else None)
        self._born[key] = entry.created_at
        self._bytes += size
        if scope is not None and vector is not None:
            self._scopes.setdefault(scope, _Scope()).add(key, vector)
        self._expire()
        evicted = 0
        while len(self._slots) > self.limits.max_entries or self._bytes > self.limits.max_bytes:
            victim = self._victim(key)
            if victim is None:
                break
            self._remove(victim)
            evicted += 1
        if evicted:
            self._on_evict("capacity", evicted)
        return key in self._slots

    def _victim(self, newest: str) -> str | None:
        window = [(k, s) for k, s in islice(self._slots.items(), EVICTION_WINDOW + 1) if k != newest][:EVICTION_WINDOW]
        if not window:
            return newest if newest in self._slots else None
        victim, slot = min(window, key=lambda item: item[1].hits)  # min keeps the first: least recent on a tie
        for _, other in window:
            if other.hits > slot.hits:
                other.hits //= 2
        return victim

    async def nearest(self, scope: str, vector: Vector, limit: int) -> list[tuple[str, float]]:
        self._expire()
        found = self._scopes.get(scope)
        return found.nearest(vector, limit) if found is not None else []

    async def forget_before(self, knowledge_version: int) -> int:
        old = [k for k, s in self._slots.items() if s.entry.knowledge_version < knowledge_version]
        for key in old:
            self._remove(key)
        if old:
            self._on_evict("invalidated", len(old))
        return len(old)

    async def stats(self) -> StoreStats:
        self._expire()
        return StoreStats(entries=len(self._slots), bytes=self._bytes)

    async def aclose(self) -> None:
        self._slots.clear()
        self._born.clear()
        self._scopes.clear()
        self._bytes = 0

    def _expire(self) -> None:
        oldest_kept = self._clock() - self.limits.ttl_s
        expired = 0
        while self._born:
            key, born = next(iter(self._born.items()))
            if born > oldest_kept:
                break
            self._remove(key)
            expired += 1
        if expired:
            self._on_evict("expired", expired)

    def _remove(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        self._born.pop(key, None)
        if slot is None:
            return
        self._bytes -= slot.size
        if slot.scope is not None:
            scope = self._scopes.get(slot.scope)
            if scope is not None:
                scope.discard(key)
                if not scope.vectors:
                    del self._scopes[slot.scope]
