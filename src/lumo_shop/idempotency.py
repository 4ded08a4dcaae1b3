"""Runs each write at most once per Idempotency-Key and records every successful one in `writes`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lumo_shop.clock import Clock
from lumo_shop.db import Write
from lumo_shop.errors import BadRequest, Invalid

Action = Callable[[Session], tuple[int, dict[str, Any]]]
"""Does the change inside the given transaction and returns (HTTP status, JSON body)."""

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool


class WriteLog:
    """Serialises writes: replays a known key's answer, refuses a known key with a new body, logs the rest."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._lock = threading.Lock()  # one writer at a time, so a key can never run twice concurrently

    @property
    def lock(self) -> threading.Lock:
        """Held by every write; holding it keeps writes out (the database reset takes it)."""
        return self._lock

    def run(
        self, operation: str, order_id: str, key: str | None, request: dict[str, Any], action: Action
    ) -> WriteOutcome:
        key = (key or "").strip()
        if not key:
            raise BadRequest(
                "idempotency_key_required",
                "Every write needs an Idempotency-Key header (a unique string such as a UUID); sending the same "
                "key and body again replays the first answer instead of acting twice.",
            )
        if len(key) > MAX_KEY_LENGTH:
            raise BadRequest("idempotency_key_required", f"The Idempotency-Key is longer than {MAX_KEY_LENGTH}.")
        with self._lock, self._sessions() as session, session.begin():
            earlier = session.scalar(select(Write).where(Write.idempotency_key == key))
            if earlier is not None:
                if (earlier.operation, earlier.order_id, earlier.request) != (operation, order_id, request):
                    raise Invalid(
                        "idempotency_key_reused",
                        f"Idempotency-Key {key!r} was already used for {earlier.operation} on order "
                        f"{earlier.order_id} with a different request; use a new key for a new request.",
                    )
                return WriteOutcome(earlier.status_code, earlier.response, replayed=True)
            status_code, body = action(session)
            session.add(
                Write(
                    operation=operation,
                    order_id=order_id,
                    idempotency_key=key,
                    request=request,
                    response=body,
                    status_code=status_code,
                    created_at=self._clock.now().isoformat(),
                )
            )
        return WriteOutcome(status_code, body, replayed=False)
