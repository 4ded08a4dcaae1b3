"""Observability: Prometheus metrics, structured logs with request and session ids, optional OpenTelemetry traces."""

from kefu.observability.metrics import KefuMetrics
from kefu.observability.tracing import TurnTracer, build_tracer
from kefu.observability.turns import TurnTelemetry

__all__ = ["KefuMetrics", "TurnTelemetry", "TurnTracer", "build_tracer"]
