"""Who is calling: channel API keys, customer tokens and operator roles as FastAPI dependencies; security headers."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kefu.api.dependencies import get_services
from kefu.auth.accounts import role_allows
from kefu.auth.service import AccessServices
from kefu.auth.tokens import AuthError, CustomerClaims, ForbiddenError
from kefu.errors import ConfigError
from kefu.services import Services

OPEN_MODE_ACTOR = "open-mode"
WS_TOKEN_PROTOCOL = "kefu.token."
WS_PROTOCOL = "kefu.v1"


def access_of(services: Services) -> AccessServices:
    if services.access is None:
        raise ConfigError("access control is not built for this app")
    return services.access


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a chat request: a channel (by API key), a customer (by token), or anyone (open mode)."""

    tenant_id: str = "default"
    key_id: str | None = None
    key_channel: str | None = None
    customer: CustomerClaims | None = None

    def check_channel(self, channel: str) -> None:
        if self.key_channel not in (None, "*", channel):
            raise ForbiddenError(f"this API key is for channel {self.key_channel!r}, not {channel!r}")


async def identify_caller(conn: HTTPConnection, services: Services, *, allow_customer: bool = False) -> Caller:
    """Resolve the Bearer credential; in `required` mode one is needed. Counts the request against its budget."""
    access = access_of(services)
    token = bearer(conn)
    if token is not None and token.startswith("kefu_"):
        key = await access.accounts.resolve_key(token)
        await access.limiter.hit("key", key.id)
        return Caller(tenant_id=key.tenant_id, key_id=key.id, key_channel=key.channel)
    if token is not None and allow_customer:
        claims = access.tokens.customer(token)
        return Caller(tenant_id=claims.tenant_id, customer=claims)
    if token is not None:
        raise AuthError("send a channel API key (Authorization: Bearer kefu_…)")
    if services.settings.auth.mode == "required":
        raise AuthError("this endpoint needs a channel API key: Authorization: Bearer kefu_… (see docs/security.md)")
    return Caller()


async def _channel_caller(conn: HTTPConnection) -> Caller:
    return await identify_caller(conn, get_services(conn))


async def _reader_caller(conn: HTTPConnection) -> Caller:
    return await identify_caller(conn, get_services(conn), allow_customer=True)


ChannelCaller = Annotated[Caller, Depends(_channel_caller)]
"""/v1/chat, /v1/chat/stream, /v1/chat/completions: a channel API key (optional in open mode)."""
SessionReader = Annotated[Caller, Depends(_reader_caller)]
"""/v1/sessions/{id}/messages: a channel API key or the session's own customer token."""


async def limit_customer(services: Services, caller: Caller, user_id: str) -> None:
    await access_of(services).limiter.hit("customer", f"{caller.tenant_id}:{user_id}")


@dataclass(frozen=True, slots=True)
class Operator:
    """The operator behind an admin request."""

    id: str
    tenant_id: str
    role: str

    @property
    def actor(self) -> str:
        return f"operator:{self.id}"


def require_role(role: str) -> Callable[[HTTPConnection], Awaitable[Operator]]:
    """A dependency that admits operators whose role includes `role` (admin ⊇ agent ⊇ viewer).

    In `open` mode, before any operator account exists, requests pass as an admin of the default tenant, so the
    demo works out of the box; from the first account on (`kefu users create --role admin`) a token is required.
    """

    async def dependency(conn: HTTPConnection) -> Operator:
        services = get_services(conn)
        access = access_of(services)
        token = bearer(conn)
        if token is None:
            if services.settings.auth.mode == "open" and not await access.accounts.has_operators():
                return Operator(OPEN_MODE_ACTOR, "default", "admin")
            raise AuthError("sign in first: POST /v1/auth/login, then send Authorization: Bearer <access_token>")
        claims = access.tokens.operator(token)
        account = await access.accounts.get_operator(claims.operator_id, tenant_id=claims.tenant_id)
        if not account.active or account.token_version != claims.version:
            raise AuthError("this token is no longer valid (the account changed); sign in again")
        if not role_allows(account.role, role):
            raise ForbiddenError(f"this needs the {role} role; you are {account.role}")
        return Operator(account.id, account.tenant_id, account.role)

    dependency.__name__ = f"require_{role}"
    return dependency


def ws_token(conn: HTTPConnection, query_token: str | None) -> str | None:
    """A customer token from the subprotocol `kefu.token.<jwt>` (kept out of URLs and logs), else from ?token=."""
    offered = conn.headers.get("sec-websocket-protocol", "")
    for item in (p.strip() for p in offered.split(",")):
        if item.startswith(WS_TOKEN_PROTOCOL):
            return item[len(WS_TOKEN_PROTOCOL) :]
    return query_token


def wants_ws_protocol(conn: HTTPConnection) -> bool:
    return WS_PROTOCOL in {p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",")}


class RateLimitByIP:
    """Counts every /v1 HTTP request against its client IP's budget before routing (429 + Retry-After)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            from kefu.auth.ratelimit import RateLimitedError

            app = scope.get("app")
            services: Services | None = getattr(app.state, "services", None) if app is not None else None
            if services is not None and services.access is not None:
                conn = HTTPConnection(scope)
                try:
                    await services.access.limiter.hit("ip", client_ip(conn))
                except RateLimitedError as exc:
                    from starlette.responses import JSONResponse

                    from kefu.api.errors import error_body

                    response = JSONResponse(
                        error_body(exc.code, str(exc)), status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _inline_hashes(html: str, tag: str) -> list[str]:
    hashes = []
    for body in re.findall(rf"<{tag}(?![^>]*\bsrc=)[^>]*>(.*?)</{tag}>", html, flags=re.S):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    return hashes


def page_csp(index_html: Path) -> str:
    """CSP for the pages: same-origin scripts and styles, plus the landing page's own inline blocks by hash."""
    html = index_html.read_text(encoding="utf-8") if index_html.is_file() else ""
    scripts = " ".join(["'self'", *_inline_hashes(html, "script")])
    styles = " ".join(["'self'", *_inline_hashes(html, "style")])
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
    )


class SecurityHeaders:
    """Adds hardening headers to every response, and a content security policy to the HTML pages."""

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.csp = csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                if path == "/" or (path.startswith("/static/") and path.endswith(".html")):
                    headers.setdefault("Content-Security-Policy", self.csp)
                    headers.setdefault("X-Frame-Options", "DENY")
                    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
                if path.startswith("/v1/"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
