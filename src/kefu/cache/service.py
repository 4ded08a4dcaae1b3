"""`AnswerCache`: built once at start-up; the pipeline's cache stages look answers up and store them through it.

What may be cached and served is decided by the stages (`kefu.pipeline.stages.cache`); this object keys, counts
and keeps entries. A failing backend never fails a turn: the lookup is a miss, the store is skipped, the error is
counted, and the backend is left alone for a few seconds so that no turn waits on it meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from kefu.cache.entry import CachedAnswer
from kefu.cache.keys import Namespace
from kefu.cache.metrics import AnswerCacheMetrics
from kefu.cache.store import AnswerStore, Limits, MemoryStore, StoreStats, Vector
from kefu.cache.worker_store import WorkerStore
from kefu.config import AnswerCacheSettings, Settings
from kefu.errors import ConfigError
from kefu.worker_memory import attach

log = logging.getLogger(__name__)
T = TypeVar("T")
_CANDIDATES = 4
"""Paraphrase candidates checked at most per lookup (the closest first)."""
_BACKOFF_S = 5.0
"""After a backend failure, the cache is skipped for this long."""
_FAILURES = (RedisError, OSError, ValueError, KeyError, TypeError)
"""A backend that is down, slow, or holds an entry this version cannot read."""


class AnswerCache:
    """Exact and semantic lookups of non-personal answers, with metrics; one per process."""

    def __init__(
        self, settings: AnswerCacheSettings, store: AnswerStore, metrics: AnswerCacheMetrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._down_until = 0.0
        self._forgotten_before = -1

    @property
    def backend(self) -> str:
        return self.store.name

    async def exact(self, ns: Namespace, tenant_id: str, language: str, question: str) -> CachedAnswer | None:
        """The answer cached for this question (normalised), tenant and language in this namespace."""
        started = time.perf_counter()
        key = ns.exact_key(tenant_id, language, question)
        entry = await self._guarded("get", lambda: self.store.get(key), None)
        if entry is not None and (entry.language != language or entry.knowledge_version != ns.knowledge_version):
            entry = None  # a digest collision cannot serve another question's answer
        self._count("exact", entry is not None, started)
        return entry

    async def similar(
        self, scope: str, vector: Vector, accept: Callable[[CachedAnswer], bool]
    ) -> tuple[CachedAnswer, float] | None:
        """The closest cached question in `scope` at least `semantic_threshold` similar whose entry `accept`s."""
        started = time.perf_counter()
        no_candidates: list[tuple[str, float]] = []
        candidates = await self._guarded(
            "nearest", lambda: self.store.nearest(scope, vector, _CANDIDATES), no_candidates
        )
        hit: tuple[CachedAnswer, float] | None = None
        for key, similarity in candidates:
            if similarity < self.settings.semantic_threshold:
                break
            # Looked at without counting as a use: only the one served is counted (recency and frequency).
            entry = await self._guarded("get", partial(self.store.get, key, touch=False), None)
            if entry is not None and accept(entry):
                await self._guarded("get", partial(self.store.get, key), None)
                hit = entry, similarity
                break
        self._count("semantic", hit is not None, started)
        return hit

    async def put(
        self,
        ns: Namespace,
        tenant_id: str,
        question: str,
        entry: CachedAnswer,
        *,
        scope: str | None = None,
        vector: Vector | None = None,
    ) -> bool:
        """Keep an answer under its exact key, and in its semantic scope when `scope` and `vector` are given."""
        key = ns.exact_key(tenant_id, entry.language, question)
        kept = await self._guarded("put", lambda: self.store.put(key, entry, scope=scope, vector=vector), False)
        if self.metrics is not None:
            self.metrics.stored("stored" if kept else "rejected")
        return kept

    def skipped(self, reason: str) -> None:
        """A finished answer turn that was not cached, and why (counted for operators)."""
        if self.metrics is not None:
            self.metrics.stored(reason)

    async def follow_knowledge(self, version: int) -> None:
        """Drop entries of older knowledge once a newer version is seen (each worker does it once per version)."""
        if version <= self._forgotten_before:
            return
        self._forgotten_before = version
        await self._guarded("invalidate", lambda: self.store.forget_before(version), 0)

    async def stats(self) -> StoreStats | None:
        return await self._guarded("stats", self.store.stats, None)

    async def aclose(self) -> None:
        await self.store.aclose()

    def _count(self, kind: str, hit: bool, started: float) -> None:
        if self.metrics is not None:
            self.metrics.lookup(kind, hit, time.perf_counter() - started)

    async def _guarded(self, operation: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        if time.monotonic() < self._down_until:
            return default
        try:
            return await call()
        except _FAILURES as exc:
            self._down_until = time.monotonic() + _BACKOFF_S
            if self.metrics is not None:
                self.metrics.failed(operation)
            log.warning(
                "answer cache (%s) %s failed: %s; going on without it for %.0fs",
                self.store.name,
                operation,
                type(exc).__name__,
                _BACKOFF_S,
            )
            return default


def cache_backend(settings: Settings) -> Literal["memory", "redis"] | None:
    """Where the answer cache lives (`auto` resolved), or None when it is off."""
    options = settings.answer_cache
    if not options.enabled or not (options.exact or options.semantic):
        return None
    if options.backend == "auto":
        return "redis" if settings.redis_url else "memory"
    return options.backend


def build_answer_cache(settings: Settings, registry: CollectorRegistry | None = None) -> AnswerCache | None:
    """The configured answer cache (None when `answer_cache.enabled` is off); `registry`: where its metrics go."""
    options = settings.answer_cache
    backend = cache_backend(settings)
    if backend is None:
        return None
    metrics = AnswerCacheMetrics(registry) if registry is not None else None
    limits = Limits(max_entries=options.max_entries, max_bytes=options.max_bytes, ttl_s=float(options.ttl_s))
    on_evict: Callable[[str, int], None] | None = metrics.evicted if metrics is not None else None
    store: AnswerStore
    if backend == "redis":
        if not settings.redis_url:  # the settings refuse this combination; kept for settings built otherwise
            raise ConfigError("KEFU_ANSWER_CACHE__BACKEND is redis but KEFU_REDIS_URL is not set")
        from kefu.cache.redis_store import RedisStore

        store = RedisStore.from_url(settings.redis_url, limits, prefix=options.redis_prefix, on_evict=on_evict)
    elif (table := attach("answers")) is not None:
        # The workers of one `kefu serve --workers N`: what one stored, the others find (shared memory).
        store = WorkerStore(table, limits, on_evict=on_evict)
    else:
        store = MemoryStore(limits, on_evict=on_evict)
    return AnswerCache(options, store, metrics)
