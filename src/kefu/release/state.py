"""Experiment state in the database, shared by every worker and replica; every change commits with its audit record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Connection, Table, and_, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from kefu.errors import ConflictError, NotFoundError, UserError
from kefu.release.spec import ARMS, CANARY, CONTROL, ArmName, ExperimentSpec
from kefu.store import ConversationStore
from kefu.store.models import ChatMessage, utcnow
from kefu.store.release_models import ReleaseExperimentRow
from kefu.store.repository import AuditEntry, append_audit, aware

Status = Literal["running", "paused", "rolled_back", "promoted"]
Action = Literal["share", "pause", "resume", "rollback", "promote"]
ACTIONS: tuple[Action, ...] = ("share", "pause", "resume", "rollback", "promote")
BUCKETS = 10_000
"""Sessions are spread over this many buckets: shares go in steps of 0.01 %."""
CONFIG_ACTOR = "system:config"
NOT_CUSTOMER_ERRORS = ("cancelled",)
"""Recorded turn errors that say nothing about the arm (the customer went away mid-turn)."""

_ROWS = cast(Table, ReleaseExperimentRow.__table__)
_MESSAGES = cast(Table, ChatMessage.__table__)


def bucket(experiment_id: str, session_id: str) -> int:
    """The session's stable bucket in [0, 10000) for this experiment: the same on every worker, for ever."""
    digest = hashlib.sha256(f"{experiment_id}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """Where an experiment stands now."""

    id: str
    state: Status
    share: float
    """Percent of new sessions the canary gets while running."""
    configured_share: float
    reason: str | None
    updated_by: str
    updated_at: datetime
    version: int

    def arm_for_new_session(self, session_bucket: int) -> ArmName:
        """The arm a session joining now is assigned to (and keeps)."""
        if self.state == "promoted":
            return CANARY
        if self.state == "running" and session_bucket < round(self.share * BUCKETS / 100):
            return CANARY
        return CONTROL

    def serving_arm(self, assigned: ArmName) -> ArmName:
        """The arm that answers a session assigned to `assigned`: a rolled-back canary's sessions go to control."""
        if self.state == "rolled_back":
            return CONTROL
        if self.state == "promoted":
            return CANARY
        return assigned

    @property
    def canary_serves(self) -> bool:
        """Whether any turn may still be answered by the canary (the rollback rule applies)."""
        return self.state != "rolled_back"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One committed change of an experiment and its audit record."""

    before: ExperimentState
    after: ExperimentState
    action: Action
    actor: str


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """One arm's bot replies in a time window, counted from the shared store (every worker's turns)."""

    turns: int = 0
    failed: int = 0
    """Turns the arm failed: its model failed (covered by control or not) or the customer got an error reply."""
    customer_errors: int = 0
    """Replies the customer saw as an error (the bilingual apology)."""
    fallbacks: int = 0
    """Turns where the canary's model failed and the control arm's answered instead."""
    handoffs: int = 0
    avg_latency_ms: float | None = None

    def rate(self, part: int) -> float | None:
        return round(part / self.turns, 4) if self.turns else None

    @property
    def error_rate(self) -> float | None:
        return self.rate(self.failed)

    @property
    def handoff_rate(self) -> float | None:
        return self.rate(self.handoffs)

    @property
    def customer_error_rate(self) -> float | None:
        return self.rate(self.customer_errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "failed": self.failed,
            "error_rate": self.error_rate,
            "customer_errors": self.customer_errors,
            "fallbacks": self.fallbacks,
            "handoffs": self.handoffs,
            "handoff_rate": self.handoff_rate,
            "avg_latency_ms": self.avg_latency_ms,
        }


def _state(row: Any) -> ExperimentState:
    return ExperimentState(
        id=row.id,
        state=row.state,
        share=float(row.share),
        configured_share=float(row.configured_share),
        reason=row.reason,
        updated_by=row.updated_by,
        updated_at=aware(row.updated_at),
        version=int(row.version),
    )


def _snapshot(state: ExperimentState) -> dict[str, Any]:
    return {"state": state.state, "share": state.share}


def next_state(current: ExperimentState, action: Action, share: float | None) -> tuple[Status, float]:
    """(state, share) after `action`; ConflictError names why an action does not apply to the current state."""
    if share is not None and not 0 <= share <= 100:
        raise UserError(f"share is a percentage from 0 to 100, not {share}")
    name = current.id
    if action == "share":
        if share is None:
            raise UserError("give the new share in percent")
        if current.state not in ("running", "paused"):
            raise ConflictError(f"experiment {name} is {current.state}: resume it with a share instead")
        return current.state, share
    if action == "pause":
        if current.state != "running":
            raise ConflictError(f"experiment {name} is {current.state}, not running: nothing to pause")
        return "paused", current.share
    if action == "resume":
        if current.state == "running":
            raise ConflictError(f"experiment {name} is already running")
        new_share = share if share is not None else current.share
        if new_share <= 0:
            raise ConflictError(f"experiment {name} has a share of 0 after its rollback: resume it with a share")
        return "running", new_share
    if action == "rollback":
        if current.state == "rolled_back":
            raise ConflictError(f"experiment {name} is already rolled back")
        return "rolled_back", 0.0
    if action == "promote":
        if current.state not in ("running", "paused"):
            raise ConflictError(f"experiment {name} is {current.state}: resume it before promoting")
        return "promoted", 100.0
    raise UserError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")


class ReleaseStates:
    """Reads and changes experiments' state in the conversation store's database."""

    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    async def all(self) -> dict[str, ExperimentState]:
        rows = await self.store.transaction(lambda conn: conn.execute(select(_ROWS)).all(), write=False)
        return {row.id: _state(row) for row in rows}

    async def get(self, experiment_id: str) -> ExperimentState:
        row = await self.store.transaction(
            lambda conn: conn.execute(select(_ROWS).where(_ROWS.c.id == experiment_id)).first(), write=False
        )
        if row is None:
            raise NotFoundError(f"no experiment {experiment_id!r} has run here")
        return _state(row)

    async def configure(self, spec: ExperimentSpec) -> ExperimentState:
        """Make the stored state follow the release file: a new experiment starts running at its share, and a share
        changed in the file re-launches it; otherwise (a restart) the stored state stands, rollbacks included."""

        def transaction(conn: Connection) -> ExperimentState:
            row = conn.execute(select(_ROWS).where(_ROWS.c.id == spec.id).with_for_update()).first()
            now = utcnow()
            after = {"state": "running", "share": spec.share, "configured_share": spec.share}
            if row is None:
                conn.execute(
                    insert(_ROWS).values(
                        id=spec.id,
                        reason="started from the release file",
                        updated_by=CONFIG_ACTOR,
                        updated_at=now,
                        version=1,
                        **after,
                    )
                )
                data: dict[str, Any] = {"before": None, "after": {"state": "running", "share": spec.share}}
            elif float(row.configured_share) != spec.share:
                before = _state(row)
                conn.execute(
                    update(_ROWS)
                    .where(_ROWS.c.id == spec.id)
                    .values(
                        reason=f"share changed in the release file from {before.configured_share} to {spec.share}",
                        updated_by=CONFIG_ACTOR,
                        updated_at=now,
                        version=_ROWS.c.version + 1,
                        **after,
                    )
                )
                data = {"before": _snapshot(before), "after": {"state": "running", "share": spec.share}}
            else:
                return _state(row)
            append_audit(conn, [AuditEntry(actor=CONFIG_ACTOR, action="release.configure", target=spec.id, data=data)])
            return _state(conn.execute(select(_ROWS).where(_ROWS.c.id == spec.id)).one())

        try:
            return await self.store.transaction(transaction, write=True)
        except IntegrityError:
            # Another worker inserted the row first; now it is there to read (and to compare with the file).
            return await self.store.transaction(transaction, write=True)

    async def change(
        self,
        experiment_id: str,
        action: Action,
        *,
        actor: str,
        tenant_id: str = "default",
        share: float | None = None,
        reason: str | None = None,
        evidence: dict[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> StateChange:
        """Apply an operator's (or the monitor's) action and audit it in the same transaction; with
        `expected_version`, only if nobody changed the experiment since that version was read (else ConflictError)."""

        def transaction(conn: Connection) -> StateChange:
            row = conn.execute(select(_ROWS).where(_ROWS.c.id == experiment_id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"no experiment {experiment_id!r} has run here")
            before = _state(row)
            if expected_version is not None and before.version != expected_version:
                raise ConflictError(f"experiment {experiment_id} changed meanwhile (version {before.version})")
            state, new_share = next_state(before, action, share)
            now = utcnow()
            conn.execute(
                update(_ROWS)
                .where(_ROWS.c.id == experiment_id)
                .values(
                    state=state,
                    share=new_share,
                    reason=reason,
                    updated_by=actor,
                    updated_at=now,
                    version=_ROWS.c.version + 1,
                )
            )
            after = _state(conn.execute(select(_ROWS).where(_ROWS.c.id == experiment_id)).one())
            data: dict[str, Any] = {"before": _snapshot(before), "after": _snapshot(after), "reason": reason}
            if evidence is not None:
                data["evidence"] = evidence
            entry = AuditEntry(
                actor=actor, action=f"release.{action}", tenant_id=tenant_id, target=experiment_id, data=data
            )
            append_audit(conn, [entry])
            return StateChange(before, after, action, actor)

        return await self.store.transaction(transaction, write=True)

    async def window(
        self, experiment_id: str, since: datetime, until: datetime | None = None
    ) -> dict[ArmName, ArmWindow]:
        """Each arm's bot replies in [since, until), from every worker's stored turns."""
        m = _MESSAGES
        customer_error = and_(m.c.error_code.is_not(None), m.c.error_code.not_in(NOT_CUSTOMER_ERRORS))
        failed = or_(m.c.arm_error.is_not(None), customer_error)
        query = (
            select(
                m.c.arm,
                func.count(),
                _count_if(failed),
                _count_if(customer_error),
                _count_if(m.c.arm_error.is_not(None)),
                _count_if(m.c.handoff.is_(True)),
                func.avg(m.c.latency_ms),
            )
            .where(m.c.experiment == experiment_id, m.c.arm.in_(ARMS), m.c.created_at >= since, m.c.role == "assistant")
            .group_by(m.c.arm)
        )
        if until is not None:
            query = query.where(m.c.created_at < until)
        rows = await self.store.transaction(lambda conn: conn.execute(query).all(), write=False)
        found = {
            row[0]: ArmWindow(
                turns=int(row[1]),
                failed=int(row[2]),
                customer_errors=int(row[3]),
                fallbacks=int(row[4]),
                handoffs=int(row[5]),
                avg_latency_ms=round(float(row[6]), 3) if row[6] is not None else None,
            )
            for row in rows
        }
        return {arm: found.get(arm, ArmWindow()) for arm in ARMS}


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)
