"""The identity guardrail: no action reads or changes an order the session's customer was not verified for.

Flows and the tool agent both ask it before every action call, whatever a flow file or a model says; the agent
also asks it about what a read returned (a parcel looked up by tracking number names its order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kefu.connectors import ActionSpec
from kefu.dialogue.state import Identity

ORDER_FIELD = "order_id"
"""Where a backend answer names the order it belongs to."""


@dataclass(frozen=True, slots=True)
class IdentityVerdict:
    """Whether an action call (or its answer) may reach the customer; when not, what named an unverified order."""

    allowed: bool
    field: str | None = None
    value: str | None = None

    def reason(self, action: str) -> str:
        return f"refused {action}: {self.field} {self.value} is not verified for this customer"


ALLOWED = IdentityVerdict(allowed=True)


def check_identity(spec: ActionSpec, args: Mapping[str, Any], identity: Identity | None) -> IdentityVerdict:
    """Every `identity_params` argument must name an order verified for this session (compared exactly, so the
    value checked is the value sent)."""
    for param in spec.identity_params:
        value = str(args.get(param) or "")
        if value and (identity is None or value not in identity.orders):
            return IdentityVerdict(allowed=False, field=param, value=value)
    return ALLOWED


def check_answer_identity(data: Mapping[str, Any], identity: Identity | None, *, owner_field: str) -> IdentityVerdict:
    """A read's answer that names an order, or its owner, must be the verified customer's."""
    order = data.get(ORDER_FIELD)
    if order is not None and (identity is None or str(order) not in identity.orders):
        return IdentityVerdict(allowed=False, field=ORDER_FIELD, value=str(order))
    owner = data.get(owner_field)
    if owner is not None and (identity is None or str(owner) != identity.user_id):
        return IdentityVerdict(allowed=False, field=owner_field, value=str(owner))
    return ALLOWED
