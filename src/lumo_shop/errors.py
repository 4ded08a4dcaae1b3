"""The shop backend's errors: each carries its HTTP status, a stable code and a message for people."""

from __future__ import annotations

from typing import Any


class ShopError(Exception):
    """A request the shop refuses; `app.py` turns it into `{"error": {"code", "message", "details"}}`."""

    status_code = 400

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class BadRequest(ShopError):
    """The request lacks something the protocol requires (e.g. an Idempotency-Key)."""

    status_code = 400


class Unauthorized(ShopError):
    """No or wrong bearer token."""

    status_code = 401


class NotFound(ShopError):
    """The order, user, product or parcel does not exist."""

    status_code = 404


class Conflict(ShopError):
    """The request is well formed but the order's state or the shop's policy forbids it."""

    status_code = 409


class Invalid(ShopError):
    """The request names something that cannot exist (a variant, a region, a tax id) or reuses a key."""

    status_code = 422
