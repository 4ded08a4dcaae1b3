"""Prometheus metrics of the answer cache: lookups and their latency, stores, evictions, backend errors, size."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from kefu.cache.store import StoreStats

LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
LOOKUP_KINDS = ("exact", "semantic")
STORE_OUTCOMES = ("stored", "personal", "flagged", "not_self_contained", "not_an_answer", "rejected")
"""Why a finished turn was or was not cached (docs/cache.md lists what each covers)."""


class AnswerCacheMetrics:
    """Counters and histograms on the app's registry (or the multiprocess directory, summed over workers)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "kefu_answer_cache_lookups",
            "Answer cache lookups by kind (exact: same normalised question; semantic: a paraphrase) and result.",
            ["kind", "result"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            "kefu_answer_cache_lookup_duration_seconds",
            "Time one answer cache lookup took, by kind and result (the hit latency is result=hit).",
            ["kind", "result"],
            buckets=LOOKUP_BUCKETS,
            registry=registry,
        )
        self.stores = Counter(
            "kefu_answer_cache_stores",
            "Finished answer turns by what the cache did with them: stored, or why not (personal, flagged, "
            "not_self_contained, not_an_answer, rejected by the store).",
            ["outcome"],
            registry=registry,
        )
        self.evictions = Counter(
            "kefu_answer_cache_evictions",
            "Entries that left the cache: capacity (entries or bytes limit), expired (TTL), invalidated (knowledge "
            "changed).",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "kefu_answer_cache_errors",
            "Answer cache backend failures (the turn went on without the cache), by operation.",
            ["operation"],
            registry=registry,
        )
        # Seen at once on /metrics, even before the first lookup.
        for kind in LOOKUP_KINDS:
            for result in ("hit", "miss"):
                self.lookups.labels(kind, result)

    def lookup(self, kind: str, hit: bool, seconds: float) -> None:
        result = "hit" if hit else "miss"
        self.lookups.labels(kind, result).inc()
        self.lookup_seconds.labels(kind, result).observe(seconds)

    def stored(self, outcome: str) -> None:
        self.stores.labels(outcome if outcome in STORE_OUTCOMES else "rejected").inc()

    def evicted(self, reason: str, count: int) -> None:
        self.evictions.labels(reason).inc(count)

    def failed(self, operation: str) -> None:
        self.errors.labels(operation).inc()


def size_gauges(backend: str, stats: StoreStats) -> list[Metric]:
    """The cache's size as its backend reports it at scrape time (Redis: the whole deployment's; memory: this
    worker's)."""
    entries = GaugeMetricFamily(
        "kefu_answer_cache_entries", "Answers held by the answer cache, by backend.", labels=["backend"]
    )
    entries.add_metric([backend], stats.entries)
    size = GaugeMetricFamily(
        "kefu_answer_cache_bytes", "Bytes held by the answer cache (entries, vectors, bookkeeping).", labels=["backend"]
    )
    size.add_metric([backend], stats.bytes)
    return [entries, size]
