"""Signed tokens (JWT, HS256): operator access and refresh tokens, and customer session tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal
from uuid import uuid4

import jwt

from kefu.config import AuthSettings
from kefu.errors import UserError

TokenType = Literal["access", "refresh", "customer"]
_ISSUER = "kefu"


class AuthError(UserError):
    """Missing, invalid or expired credentials."""

    code = "unauthorized"
    status_code = 401


class ForbiddenError(UserError):
    """Valid credentials that do not allow this."""

    code = "forbidden"
    status_code = 403


@dataclass(frozen=True, slots=True)
class CustomerClaims:
    """What a customer token lets its holder do: read and write one session as one customer."""

    tenant_id: str
    user_id: str
    session_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class OperatorClaims:
    """Who an operator token speaks for."""

    operator_id: str
    tenant_id: str
    role: str
    version: int


class TokenService:
    """Mints and checks kefu's tokens with one secret; a token of one type never passes as another."""

    def __init__(self, secret: bytes, settings: AuthSettings) -> None:
        self._secret = secret
        self.settings = settings

    def _encode(self, typ: TokenType, ttl_s: int, claims: dict[str, Any]) -> str:
        now = int(time.time())
        payload = {"iss": _ISSUER, "typ": typ, "iat": now, "exp": now + ttl_s, "jti": uuid4().hex, **claims}
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def _decode(self, token: str, typ: TokenType) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=["HS256"], issuer=_ISSUER, options={"require": ["exp", "typ"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired; get a new one") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is not valid") from None
        if payload.get("typ") != typ:
            raise AuthError(f"a {payload.get('typ')} token cannot be used here; send a {typ} token")
        return payload

    def customer_token(self, claims: CustomerClaims) -> str:
        return self._encode(
            "customer",
            self.settings.customer_token_ttl_s,
            {"tid": claims.tenant_id, "sub": claims.user_id, "sid": claims.session_id, "ch": claims.channel},
        )

    def customer(self, token: str) -> CustomerClaims:
        p = self._decode(token, "customer")
        return CustomerClaims(tenant_id=p["tid"], user_id=p["sub"], session_id=p["sid"], channel=p["ch"])

    def operator_tokens(self, claims: OperatorClaims) -> dict[str, Any]:
        body = {"sub": claims.operator_id, "tid": claims.tenant_id, "role": claims.role, "ver": claims.version}
        return {
            "access_token": self._encode("access", self.settings.access_ttl_s, body),
            "refresh_token": self._encode("refresh", self.settings.refresh_ttl_s, body),
            "token_type": "bearer",
            "expires_in": self.settings.access_ttl_s,
        }

    def operator(self, token: str, typ: Literal["access", "refresh"] = "access") -> OperatorClaims:
        p = self._decode(token, typ)
        return OperatorClaims(operator_id=p["sub"], tenant_id=p["tid"], role=p["role"], version=int(p["ver"]))
