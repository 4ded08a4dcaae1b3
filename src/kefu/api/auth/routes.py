"""POST /v1/auth/login, /v1/auth/refresh (operators) and /v1/widget/session (customers of the web widget)."""

from __future__ import annotations

from uuid import uuid4

from fastapi import APIRouter, Request

from kefu.api.auth.protocol import LoginRequest, RefreshRequest, TokenPair, WidgetSession, WidgetSessionRequest
from kefu.api.dependencies import ServicesDep
from kefu.api.security import access_of, bearer, client_ip
from kefu.auth.tokens import AuthError, CustomerClaims, OperatorClaims
from kefu.errors import NotFoundError
from kefu.store.models import new_id

router = APIRouter(prefix="/v1", tags=["auth"])
_AUTH_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Wrong credentials, or an invalid or expired token"},
    422: {"description": "Malformed request body"},
    429: {"description": "Too many attempts; see Retry-After"},
}


@router.post("/auth/login", response_model=TokenPair, responses=_AUTH_ERRORS)
async def login(req: LoginRequest, request: Request, services: ServicesDep) -> TokenPair:
    """Exchange an operator's username and password for an access and a refresh token."""
    access = access_of(services)
    # Password guessing is limited per account as well as per IP.
    await access.limiter.hit("customer", f"login:{req.username}")
    try:
        account = await access.accounts.authenticate(req.username, req.password)
    except AuthError:
        await access.audit(
            actor=f"ip:{client_ip(request)}", action="auth.login_failed", tenant_id="default", target=req.username
        )
        raise
    await access.audit(actor=f"operator:{account.id}", action="auth.login", tenant_id=account.tenant_id)
    pair = access.tokens.operator_tokens(
        OperatorClaims(account.id, account.tenant_id, account.role, account.token_version)
    )
    return TokenPair(**pair, role=account.role, tenant_id=account.tenant_id)


@router.post("/auth/refresh", response_model=TokenPair, responses=_AUTH_ERRORS)
async def refresh(req: RefreshRequest, services: ServicesDep) -> TokenPair:
    """A new token pair for a valid refresh token of an account that has not changed since."""
    access = access_of(services)
    claims = access.tokens.operator(req.refresh_token, "refresh")
    try:
        account = await access.accounts.get_operator(claims.operator_id, tenant_id=claims.tenant_id)
    except NotFoundError:
        raise AuthError("this account no longer exists") from None
    if not account.active or account.token_version != claims.version:
        raise AuthError("this refresh token is no longer valid; sign in again")
    pair = access.tokens.operator_tokens(
        OperatorClaims(account.id, account.tenant_id, account.role, account.token_version)
    )
    return TokenPair(**pair, role=account.role, tenant_id=account.tenant_id)


@router.post("/widget/session", response_model=WidgetSession, responses=_AUTH_ERRORS)
async def widget_session(req: WidgetSessionRequest, request: Request, services: ServicesDep) -> WidgetSession:
    """A customer token for one session. A still-valid previous token (Bearer) renews itself; otherwise a new
    anonymous customer and session are created (`required` mode), or the widget's own ids are used (`open` mode)."""
    access = access_of(services)
    previous = bearer(request)
    claims: CustomerClaims | None = None
    if previous is not None:
        try:
            claims = access.tokens.customer(previous)
        except AuthError:
            claims = None  # expired or foreign: start afresh below
    if claims is None:
        if services.settings.auth.mode == "open" and req.user_id:
            user_id, session_id = req.user_id, req.session_id or new_id()
            if req.session_id is not None:
                try:
                    found = await services.store.get_session(req.session_id)
                except NotFoundError:
                    found = None
                if found is not None and found.user_id != user_id:
                    session_id = new_id()  # someone else's session: never hand out a token for it
        else:
            user_id, session_id = f"w_{uuid4().hex}", new_id()
        claims = CustomerClaims(tenant_id="default", user_id=user_id, session_id=session_id, channel=req.channel)
    return WidgetSession(
        token=access.tokens.customer_token(claims),
        user_id=claims.user_id,
        session_id=claims.session_id,
        expires_in=services.settings.auth.customer_token_ttl_s,
    )
