"""Prometheus metrics: built once per app on its own registry (or the multiprocess directory), served at /metrics.

Labels are bounded: stage, route, intent, model, kind, channel, status — never a session id or any text. Values
a client can choose (channel) or configuration names (intents, flows' handoff reasons, models) pass through
`BoundedLabel`, so no caller can grow the number of series without limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess mode: every worker writes its values under this directory."""
OTHER = "other"
NONE = "none"

TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_Labelled = Counter | Gauge | Histogram
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class BoundedLabel:
    """Passes the first `limit` distinct values of a label through; later new ones become "other"."""

    def __init__(self, limit: int = 64, max_chars: int = 64) -> None:
        self.limit = limit
        self.max_chars = max_chars
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        value = value[: self.max_chars]
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


@dataclass(frozen=True, slots=True)
class TokenUse:
    """Tokens one model read and wrote for a turn."""

    model: str
    input: int
    output: int


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """One guard's verdict on a turn: passed, flagged (suspicious, let through) or tripped."""

    guard: str
    verdict: str
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What the metrics keep of a finished turn (labels and timings only, no text)."""

    channel: str
    route: str | None
    intent: str | None
    seconds: float
    stages: Mapping[str, float]
    """Seconds per stage."""
    first_text_s: float | None = None
    """Streaming channels only: seconds until the customer was sent the first text."""
    error: str | None = None
    handoff_reason: str | None = None
    tokens: tuple[TokenUse, ...] = ()
    guards: tuple[GuardOutcome, ...] = ()


def multiprocess_dir() -> Path | None:
    """The multiprocess directory, when the environment sets one (`kefu serve --workers N` does)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(default: Path) -> Path:
    """Point the workers at one empty multiprocess directory (PROMETHEUS_MULTIPROC_DIR, else `default`).

    Call it before the workers start: prometheus_client reads the variable when it is imported, and values left by
    an earlier run would be added to this one's.
    """
    path = multiprocess_dir() or default
    if path.is_dir():
        for stale in path.glob("*.db"):
            stale.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class KefuMetrics:
    """Every metric kefu records; `render()` gives the exposition text of this process, or of all workers."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: Path | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        r = self.registry
        self.turns = Counter(
            "kefu_turns", "Customer turns answered, by channel and route.", ["channel", "route"], registry=r
        )
        self.turn_seconds = Histogram(
            "kefu_turn_duration_seconds",
            "Turn latency from receipt to stored reply, by route.",
            ["route"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "kefu_stage_duration_seconds",
            "Time spent in each pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.first_token_seconds = Histogram(
            "kefu_time_to_first_token_seconds",
            "Streaming channels: time until the customer is sent the first text (a whole reply when nothing streamed).",
            ["route"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.intents = Counter("kefu_intents", "Turns by recognised intent (none: no intent).", ["intent"], registry=r)
        self.handoffs = Counter("kefu_handoffs", "Turns handed to a person, by reason.", ["reason"], registry=r)
        self.guard_verdicts = Counter(
            "kefu_guard_verdicts",
            "Input and output guard verdicts (passed, flagged, tripped) by kind.",
            ["guard", "verdict", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "kefu_turn_errors", "Turns that ended in a recorded error, by kind.", ["kind"], registry=r
        )
        self.tokens = Counter(
            "kefu_llm_tokens",
            "LLM tokens per model; direction input (prompt) or output (completion).",
            ["model", "direction"],
            registry=r,
        )
        self.turns_in_progress = Gauge(
            "kefu_turns_in_progress", "Turns being processed now.", registry=r, multiprocess_mode="livesum"
        )
        self.websockets = Gauge(
            "kefu_websockets_active",
            "Open WebSockets by route (/v1/ws: customers, /v1/console/ws: agents).",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.http_requests = Counter(
            "kefu_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "kefu_http_request_duration_seconds",
            "HTTP request duration (streams: until the last byte).",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.llm_limit = Gauge(
            "kefu_llm_max_concurrency",
            "LLM requests a backend may serve at once (max_concurrency; summed over workers).",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.llm_in_flight = Gauge(
            "kefu_llm_in_flight",
            "LLM requests holding a slot now, by backend.",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.llm_queue_length = Gauge(
            "kefu_llm_queue_length",
            "LLM requests waiting for a slot now, by backend.",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.llm_queue_wait = Histogram(
            "kefu_llm_queue_wait_seconds",
            "How long each LLM request waited for a slot before it was sent (0 when one was free).",
            ["backend"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.llm_busy = Counter(
            "kefu_llm_busy",
            "LLM requests refused because the backend was busy: reason queue_full (refused at once) or timeout.",
            ["backend", "reason"],
            registry=r,
        )
        self.query_embeddings = Counter(
            "kefu_query_embeddings",
            "Customer messages' query vectors by where they came from: memo (this worker remembered it), workers "
            "(another worker of this server computed it) or model (computed now).",
            ["source"],
            registry=r,
        )
        self._embedding_sources = {s: self.query_embeddings.labels(s) for s in ("memo", "workers", "model")}
        self._channel = BoundedLabel(limit=16)
        self._route = BoundedLabel()
        self._stage = BoundedLabel()
        self._intent = BoundedLabel(limit=256)
        self._reason = BoundedLabel()
        self._kind = BoundedLabel()
        self._model = BoundedLabel(limit=16)
        self._http_route = BoundedLabel(limit=256, max_chars=128)
        self._backend = BoundedLabel(limit=16)
        self._children: dict[tuple[_Labelled, tuple[str, ...]], Any] = {}

    def _child(self, metric: _Labelled, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: a turn records some twenty series, and the labels are bounded."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_turn(self, turn: TurnRecord) -> None:
        route = self._route(turn.route)
        self._child(self.turns, self._channel(turn.channel), route).inc()
        self._child(self.turn_seconds, route).observe(turn.seconds)
        for stage, seconds in turn.stages.items():
            self._child(self.stage_seconds, self._stage(stage)).observe(seconds)
        if turn.first_text_s is not None:
            self._child(self.first_token_seconds, route).observe(turn.first_text_s)
        self._child(self.intents, self._intent(turn.intent)).inc()
        if turn.handoff_reason is not None:
            self._child(self.handoffs, self._reason(turn.handoff_reason)).inc()
        if turn.error is not None:
            self._child(self.errors, self._kind(turn.error)).inc()
        for use in turn.tokens:
            model = self._model(use.model)
            if use.input:
                self._child(self.tokens, model, "input").inc(use.input)
            if use.output:
                self._child(self.tokens, model, "output").inc(use.output)
        for outcome in turn.guards:
            self._child(self.guard_verdicts, outcome.guard, outcome.verdict, self._kind(outcome.kind)).inc()

    def query_embedded(self, source: str, count: int) -> None:
        """`count` query vectors came from `source` (memo, workers or model)."""
        self._embedding_sources[source].inc(count)

    def http_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else OTHER
        label = self._http_route(route) if route else "unmatched"
        self._child(self.http_requests, method, label, str(status)).inc()
        self._child(self.http_seconds, method, label).observe(seconds)

    def llm_slots(self, backend: str, *, limit: int, in_flight: int, waiting: int) -> None:
        """A backend's concurrency limiter changed (see `kefu.llm.limiter.LimiterObserver`)."""
        label = self._backend(backend)
        self.llm_limit.labels(label).set(limit)
        self.llm_in_flight.labels(label).set(in_flight)
        self.llm_queue_length.labels(label).set(waiting)

    def llm_waited(self, backend: str, seconds: float) -> None:
        self.llm_queue_wait.labels(self._backend(backend)).observe(seconds)

    def llm_refused(self, backend: str, reason: str) -> None:
        self.llm_busy.labels(self._backend(backend), reason).inc()

    def websocket_opened(self, route: str) -> str:
        label = self._http_route(route)
        self.websockets.labels(label).inc()
        return label

    def websocket_closed(self, label: str) -> None:
        self.websockets.labels(label).dec()

    def render(self, accept: str | None = None, extra: Iterable[Metric] = ()) -> tuple[bytes, str]:
        """The exposition (text or OpenMetrics, as `accept` asks) and its content type; `extra`: scrape-time values."""
        encoder, content_type = choose_encoder(accept or "")
        source: Collector = self.registry
        if self.multiprocess is not None:
            source = MultiProcessCollector(None, str(self.multiprocess))  # type: ignore[no-untyped-call]
        return encoder(_Scrape(source, list(extra))), content_type

    def close(self) -> None:
        """A worker leaving: its live gauges (open sockets, turns in progress) stop counting."""
        if self.multiprocess is not None:
            mark_process_dead(os.getpid(), str(self.multiprocess))  # type: ignore[no-untyped-call]


class _Scrape:
    """The recorded metrics plus values computed for this scrape (queue length, circuit state)."""

    def __init__(self, source: Collector, extra: list[Metric]) -> None:
        self.source = source
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()
        yield from self.extra


def queue_gauges(counts: Mapping[str, int], oldest_queued_s: float | None) -> list[Metric]:
    """The handoff queue as the database has it now, across tenants."""
    length = GaugeMetricFamily(
        "kefu_handoff_queue_length", "Open handoff tickets: queued (waiting) or assigned.", labels=["status"]
    )
    for status in ("queued", "assigned"):
        length.add_metric([status], counts.get(status, 0))
    oldest = GaugeMetricFamily(
        "kefu_handoff_queue_oldest_wait_seconds", "How long the longest-waiting queued ticket has waited (0: none)."
    )
    oldest.add_metric([], oldest_queued_s or 0.0)
    return [length, oldest]


def circuit_gauges(circuits: Iterable[tuple[str, str, bool]]) -> list[Metric]:
    """1 while an LLM backend's circuit breaker is open (calls refused after repeated failures), else 0."""
    family = GaugeMetricFamily(
        "kefu_llm_circuit_open",
        "1 while the circuit breaker of an LLM backend is open (it failed repeatedly), by role and model.",
        labels=["role", "model"],
    )
    for role, model, is_open in circuits:
        family.add_metric([role, model[:64]], 1.0 if is_open else 0.0)
    return [family]
