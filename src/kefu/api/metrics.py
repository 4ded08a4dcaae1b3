"""GET /metrics for Prometheus, and the middleware that gives every request an id and counts it by route."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

from fastapi import APIRouter, Request, Response
from prometheus_client.metrics_core import Metric
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kefu.api.dependencies import ServicesDep
from kefu.api.security import bearer
from kefu.auth.tokens import AuthError
from kefu.cache.metrics import size_gauges
from kefu.errors import KefuError, NotFoundError
from kefu.llm.resilience import CircuitBreaker, CircuitState
from kefu.observability.logging import REQUEST_ID_HEADER, bind_request, unbind_request
from kefu.observability.metrics import KefuMetrics, circuit_gauges, queue_gauges
from kefu.services import Services
from kefu.store.models import utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["observability"])
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""An incoming X-Request-ID is kept only when it is this plain (it ends up in every log line of the request)."""


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format (OpenMetrics on request)"},
        401: {"description": "metrics.token is set and the request did not carry it"},
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics of this kefu (all workers' when `kefu serve --workers N`): see docs/observability.md."""
    registry = services.metrics
    if registry is None:
        raise NotFoundError("metrics are disabled (KEFU_METRICS__ENABLED=false)")
    token = services.settings.metrics.token
    if token is not None and not hmac.compare_digest(
        (bearer(request) or "").encode(), token.get_secret_value().encode()
    ):
        raise AuthError("send the metrics token: Authorization: Bearer <KEFU_METRICS__TOKEN>")
    body, content_type = registry.render(request.headers.get("accept"), await _scrape_time(services))
    return Response(body, media_type=content_type)


async def _scrape_time(services: Services) -> list[Metric]:
    """Values read when Prometheus asks, not on the turn path: the handoff queue and the LLM circuit breakers."""
    families: list[Metric] = []
    if services.handoff is not None:
        try:
            counts, oldest = await services.handoff.tickets.queue_stats()
        except KefuError as exc:
            log.warning("handoff queue not in this scrape: %s", exc.code)
        else:
            waited = (utcnow() - oldest).total_seconds() if oldest is not None else None
            families += queue_gauges(counts, waited)
    circuits = []
    for role, backend in services.llms.items():
        breaker = getattr(backend, "breaker", None)
        if isinstance(breaker, CircuitBreaker):
            circuits.append((role, backend.model, breaker.state is CircuitState.OPEN))
    families += circuit_gauges(circuits)
    if services.answer_cache is not None:
        stats = await services.answer_cache.stats()  # Redis: the deployment's cache; memory: this worker's
        if stats is not None:
            families += size_gauges(services.answer_cache.backend, stats)
    if services.release is not None:
        families += services.release.gauges()  # each experiment's state and canary share
    return families


def _metrics_of(scope: Scope) -> KefuMetrics | None:
    app = scope.get("app")
    services: Services | None = getattr(app.state, "services", None) if app is not None else None
    return services.metrics if services is not None else None


def _route_template(scope: Scope) -> str | None:
    """The matched route's path template (`/v1/sessions/{session_id}/messages`), never the raw path."""
    route = scope.get("route")
    if route is None:
        # Answered before routing (413, 429): find the route it was meant for.
        router = getattr(scope.get("app"), "router", None)
        for candidate in getattr(router, "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestTelemetry:
    """Gives every request an id (X-Request-ID in and out, on every log line), counts HTTP requests by route
    template and status, and keeps the number of open WebSockets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        tokens = bind_request(request_id)
        if scope["type"] == "http":
            await self._http(scope, receive, send, request_id)
        else:
            await self._websocket(scope, receive, send)
        # Not reset when an exception escapes: the server-error handler outside logs it with this request's id.
        unbind_request(tokens)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics = _metrics_of(scope)
            if metrics is not None:
                metrics.http_request(scope["method"], _route_template(scope), status, time.perf_counter() - start)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        opened: tuple[KefuMetrics, str] | None = None

        async def send_counted(message: Message) -> None:
            nonlocal opened
            await send(message)
            if message["type"] == "websocket.accept" and opened is None:
                metrics = _metrics_of(scope)
                if metrics is not None:
                    opened = metrics, metrics.websocket_opened(_route_template(scope) or "unmatched")

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if opened is not None:
                opened[0].websocket_closed(opened[1])
