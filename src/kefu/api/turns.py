"""Turning channel input into a validated `TurnInput`, shared by every chat endpoint."""

from __future__ import annotations

from typing import Any

from kefu.config import Settings
from kefu.errors import UserError
from kefu.pipeline import TurnInput


def check_text(text: str, settings: Settings) -> str:
    """Reject empty and over-long customer messages with a message a person can act on."""
    if not text.strip():
        raise UserError("text is empty; send the customer's message in 'text'")
    limit = settings.chat.max_message_chars
    if len(text) > limit:
        raise UserError(
            f"text is {len(text)} characters; the limit is {limit} (operators can raise KEFU_CHAT__MAX_MESSAGE_CHARS)"
        )
    return text


def make_turn(
    settings: Settings,
    *,
    user_id: str,
    channel: str,
    text: str,
    session_id: str | None = None,
    client_message_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    tenant_id: str = "default",
) -> TurnInput:
    return TurnInput(
        user_id=user_id,
        channel=channel,
        text=check_text(text, settings),
        session_id=session_id,
        client_message_id=client_message_id,
        metadata=metadata or {},
        tenant_id=tenant_id,
    )
