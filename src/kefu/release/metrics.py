"""Prometheus metrics per experiment and arm; arms are two, experiments come from the release file (bounded)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from kefu.observability.metrics import TURN_BUCKETS, BoundedLabel
from kefu.release.state import ExperimentState

STATES = ("running", "paused", "rolled_back", "promoted")


class ReleaseMetrics:
    """Turns, failures, handoffs and latency by experiment and arm, and rollbacks by trigger."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.turns = Counter(
            "kefu_release_turns",
            "Turns answered in an experiment, by the arm that served them.",
            ["experiment", "arm"],
            registry=registry,
        )
        self.errors = Counter(
            "kefu_release_errors",
            "Failed turns in an experiment by arm and kind: fallback (the canary's model failed and the control's "
            "answered) or reply (the customer got an error reply).",
            ["experiment", "arm", "kind"],
            registry=registry,
        )
        self.handoffs = Counter(
            "kefu_release_handoffs",
            "Turns handed to a person in an experiment, by arm.",
            ["experiment", "arm"],
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "kefu_release_turn_duration_seconds",
            "Turn latency in an experiment, by arm.",
            ["experiment", "arm"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.rollbacks = Counter(
            "kefu_release_rollbacks",
            "Canary rollbacks, by trigger (auto: the rollback rule; manual: an operator).",
            ["experiment", "trigger"],
            registry=registry,
        )
        self._experiment = BoundedLabel(limit=16)

    def record_turn(
        self, experiment: str, arm: str, *, seconds: float, fallback: bool, error: bool, handoff: bool
    ) -> None:
        label = self._experiment(experiment)
        self.turns.labels(label, arm).inc()
        self.turn_seconds.labels(label, arm).observe(seconds)
        if fallback:
            self.errors.labels(label, arm, "fallback").inc()
        if error:
            self.errors.labels(label, arm, "reply").inc()
        if handoff:
            self.handoffs.labels(label, arm).inc()

    def rolled_back(self, experiment: str, trigger: str) -> None:
        self.rollbacks.labels(self._experiment(experiment), trigger).inc()


def state_gauges(states: Iterable[ExperimentState]) -> list[Metric]:
    """The canary's share and each experiment's state as this worker last read them from the database."""
    share = GaugeMetricFamily(
        "kefu_release_canary_share_percent", "Percent of new sessions assigned to the canary.", labels=["experiment"]
    )
    state = GaugeMetricFamily(
        "kefu_release_state",
        "1 for the experiment's current state (running, paused, rolled_back, promoted).",
        labels=["experiment", "state"],
    )
    for experiment in states:
        share.add_metric([experiment.id], experiment.share)
        for name in STATES:
            state.add_metric([experiment.id, name], 1.0 if experiment.state == name else 0.0)
    return [share, state]
