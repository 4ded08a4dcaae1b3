"""Request and response schemas of sign-in, token refresh and widget sessions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kefu.api.chat.protocol import SESSION_ID_PATTERN


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    """An operator's access token (short) and refresh token (long)."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    tenant_id: str


class WidgetSessionRequest(BaseModel):
    """What the widget remembers; in `required` mode both are ignored unless its previous token vouches for them."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    channel: str = Field(default="web", pattern=r"^[a-z0-9_-]{1,32}$")


class WidgetSession(BaseModel):
    """A customer token for one session: send it on the WebSocket and the history request."""

    token: str
    user_id: str
    session_id: str
    expires_in: int
