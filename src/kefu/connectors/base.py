"""The action contract: one named operation on the shop's backend, its arguments and its typed outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ActionKind = Literal["read", "write"]


_UNAVAILABLE = frozenset({"backend_unavailable", "timeout", "invalid_response", "backend_error", "backend_auth"})


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What an action is called, whether it changes anything, and which arguments it takes."""

    name: str
    kind: ActionKind
    connector: str
    description: str = ""
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    identity_params: tuple[str, ...] = ()
    """Arguments that name something a customer owns (an order id): checked against the verified identity."""

    @property
    def writes(self) -> bool:
        return self.kind == "write"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of one action call: data on success, or an error code flows can branch on."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    """The backend's own code (`order_not_found`, `outside_return_window`) or kefu's (`backend_unavailable`,
    `invalid_response`, `timeout`)."""
    message: str = ""
    status: int | None = None
    replayed: bool = False
    """The backend recognised the idempotency key and returned the earlier result without acting again."""
    attempts: int = 1

    @property
    def unavailable(self) -> bool:
        """The backend could not be reached or answered nonsense: the customer cannot proceed without a person."""
        return self.error_code in _UNAVAILABLE

    def as_trace(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.ok, "status": self.status, "attempts": self.attempts}
        if not self.ok:
            data["error_code"] = self.error_code
            data["message"] = self.message
        if self.replayed:
            data["replayed"] = True
        return data


class Connector(Protocol):
    """Performs actions on one backend system."""

    name: str

    async def call(self, spec: ActionSpec, args: dict[str, Any], *, idempotency_key: str | None) -> ActionResult: ...

    async def aclose(self) -> None: ...
