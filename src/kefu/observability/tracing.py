"""Optional OpenTelemetry tracing: a span per turn with a child span per stage, exported over OTLP.

Needs the `otel` extra. Span attributes are labels and ids (stage, route, intent, model, error code, session id),
never text; a failing stage's span records the exception's type only, since its message may quote the customer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import kefu
from kefu.config import TracingSettings
from kefu.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

_EXPORTERS = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


class TurnTracer:
    """Opens the spans of a turn on kefu's own tracer provider (the process-wide default is left alone)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.provider = provider
        self.tracer = provider.get_tracer("kefu", kefu.__version__)
        self._status, self._error = Status, StatusCode.ERROR

    @contextmanager
    def span(self, name: str, attributes: dict[str, str]) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(self._status(self._error, type(exc).__qualname__))
                raise

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""
        self.provider.shutdown()


def require_otel(settings: TracingSettings) -> None:
    """Fail with a message naming the extra when tracing is on but OpenTelemetry is not installed."""
    for module in ("opentelemetry.sdk.trace", _EXPORTERS[settings.protocol]):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"KEFU_TRACING__ENABLED is true but {module} is not installed: "
                "install the otel extra (pip install 'kefu[otel]') or turn tracing off"
            ) from None


def build_tracer(settings: TracingSettings, *, exporter: SpanExporter | None = None) -> TurnTracer | None:
    """The turn tracer when tracing is enabled; `exporter` replaces the OTLP exporter (tests: InMemorySpanExporter)."""
    if not settings.enabled:
        return None
    require_otel(settings)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": settings.service_name, "service.version": kefu.__version__})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        otlp = importlib.import_module(_EXPORTERS[settings.protocol])
        kwargs = {"endpoint": settings.endpoint} if settings.endpoint else {}
        # Batched and sent from a background thread: a slow collector never holds up a turn.
        provider.add_span_processor(BatchSpanProcessor(otlp.OTLPSpanExporter(**kwargs)))
    return TurnTracer(provider)
