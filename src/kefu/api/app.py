"""The ASGI application: `create_app(settings)` builds every service in the lifespan; routers stay thin."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

import kefu
from kefu.api import health, knowledge_pages, metrics, pages, ws
from kefu.api.admin import access as admin_access
from kefu.api.admin import analytics as admin_analytics
from kefu.api.admin import knowledge as admin_knowledge
from kefu.api.admin import release as admin_release
from kefu.api.admin import turns as admin_turns
from kefu.api.auth import routes as auth_routes
from kefu.api.chat import routes as chat_routes
from kefu.api.console import routes as console_routes
from kefu.api.errors import error_body, install_error_handlers
from kefu.api.openai_compat import routes as openai_routes
from kefu.api.security import RateLimitByIP, SecurityHeaders, page_csp, require_role
from kefu.config import Settings, load_settings
from kefu.llm.base import LLMBackend
from kefu.observability.logging import REQUEST_ID_HEADER
from kefu.services import build_services

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
GC_THRESHOLDS = (5000, 10, 10)
"""The cyclic collector's thresholds while the app serves (Python's default: 700, 10, 10). Every young collection
walks whatever is young and alive at that moment; under load that is mostly the turns in flight (their coroutines,
frames, requests), so at 700 allocations the same in-flight objects were walked again and again. Load test, one
worker, 64 customers, each pass timed by a collector callback: 0.36 ms of collection per turn at the default, 0.21
here; young passes up to ~20 ms, a middle one (every tenth) up to ~50 ms, and no full pass in the run where the
default made one every ~700 turns (~50 ms each). (5000, 50, 20) collected as little but its middle pass took 106 ms."""


class BodySizeLimit:
    """Rejects request bodies above a limit before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                from starlette.responses import JSONResponse

                message = f"request body is larger than {self.max_bytes} bytes"
                await JSONResponse(error_body("payload_too_large", message), status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    llm: LLMBackend | None = None,
    action_transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the kefu application; `llm` overrides every configured model (tests, benchmarks), `span_exporter`
    receives the turn spans when tracing is on (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(
            settings, llm=llm, action_transports=action_transports, span_exporter=span_exporter
        )
        app.state.services = services
        log.info("kefu ready: database %s, chat model %s", services.engine.dialect.name, services.llms["chat"].name)
        # Everything built so far (models, indexes, vocabularies: some 300k objects) lives as long as the app. Frozen,
        # the collector's full passes skip it: on the 2-core machine one took ~190 ms, a pause in whichever turns
        # were running. Unfrozen at shutdown, so a process that builds many apps (the tests) frees them.
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await services.aclose()

    app = FastAPI(
        title="kefu",
        version=kefu.__version__,
        summary="Self-hosted LLM customer service (客服) — chat, streaming, WebSocket and OpenAI-compatible APIs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RateLimitByIP)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(SecurityHeaders, csp=page_csp(pages.STATIC_DIR / "index.html"))
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    # Outermost: every response, the 413s and 429s above included, carries the request id and is counted.
    app.add_middleware(metrics.RequestTelemetry)
    app.include_router(chat_routes.router)
    app.include_router(auth_routes.router)
    # Every /v1/admin router needs an operator; routes inside narrow it further (e.g. admin-only writes).
    app.include_router(admin_access.router, dependencies=[Depends(require_role("viewer"))])
    app.include_router(admin_turns.router, dependencies=[Depends(require_role("viewer"))])
    app.include_router(admin_analytics.router, dependencies=[Depends(require_role("viewer"))])
    app.include_router(admin_knowledge.router, dependencies=[Depends(require_role("viewer"))])
    app.include_router(admin_release.router, dependencies=[Depends(require_role("viewer"))])
    # The agent console: every route and the socket check the agent role themselves.
    app.include_router(console_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(ws.router)
    app.include_router(health.router)
    if settings.metrics.enabled:
        app.include_router(metrics.router)
    app.include_router(pages.router)
    app.include_router(knowledge_pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: settings from the environment."""
    return create_app(load_settings())
