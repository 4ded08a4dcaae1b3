"""A session's dialogue state (active flow, step, slots, attempts, verified customer), persisted per session.

The state is one JSON document per session with a version number: any worker can load it, and a save
based on a stale read is refused, so two workers cannot silently overwrite each other's progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from kefu.errors import ConflictError
from kefu.store import ConversationStore
from kefu.store.dialogue_models import DialogueStateRow
from kefu.store.models import utcnow
from kefu.store.prepared import PreparedRead, PreparedWrite

_STATES = cast(Table, DialogueStateRow.__table__)
# Built once: a statement's construction costs more than its run (names bound are no column's, as update() requires).
_LOAD = PreparedRead(select(_STATES.c.data, _STATES.c.version).where(_STATES.c.session_id == bindparam("b_session_id")))
_INSERT = PreparedWrite(insert(_STATES))
_UPDATE = PreparedWrite(
    update(_STATES)
    .where(_STATES.c.session_id == bindparam("b_session_id"), _STATES.c.version == bindparam("b_expected"))
    .values(data=bindparam("b_data"), version=bindparam("b_version"), updated_at=bindparam("b_now"))
)
_RECENT_FLOWS = 5


@dataclass(slots=True)
class FlowRun:
    """One run of a flow: where it is, what it has collected and what it is waiting for."""

    flow: str
    run_id: str
    step: str
    slots: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    """`save_as` name → the action's response, and confirmations given (`confirmed:<step>`)."""
    attempts: dict[str, int] = field(default_factory=dict)
    awaiting: str | None = None
    """`collect:<slot>`, `verify:<slot>` or `confirm:<step>`: what the last bot message asked for."""
    started_at: str = field(default_factory=lambda: utcnow().isoformat())
    language: str = "zh"
    """The language the flow is conducted in; a reply of only numbers or codes keeps it."""
    intent: str | None = None
    """The intent that started the run: the run's later turns ("0827", "是的") are recorded under it."""

    @property
    def awaiting_kind(self) -> str | None:
        return self.awaiting.split(":", 1)[0] if self.awaiting else None

    @property
    def awaiting_target(self) -> str | None:
        return self.awaiting.split(":", 1)[1] if self.awaiting else None


@dataclass(slots=True)
class Identity:
    """The shop customer this session has been shown to be, and the orders verified as theirs."""

    user_id: str
    orders: list[str] = field(default_factory=list)
    verified_at: str = field(default_factory=lambda: utcnow().isoformat())
    method: str = "order_phone"


@dataclass(slots=True)
class SessionDialogue:
    """Everything dialogue remembers about a session between turns."""

    active: FlowRun | None = None
    identity: Identity | None = None
    unresolved_streak: int = 0
    """Consecutive turns the same need went unmet (slot not recognised, action failed, no answer)."""
    recent: list[dict[str, Any]] = field(default_factory=list)
    """The last finished flows: name, run id, outcome."""
    version: int = 0
    saved: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """The state as the database holds it (None: no row yet); a save that would write the same is skipped."""

    def finish(self, outcome: str) -> None:
        if self.active is not None:
            self.recent = [*self.recent, {"flow": self.active.flow, "run_id": self.active.run_id, "outcome": outcome}]
            self.recent = self.recent[-_RECENT_FLOWS:]
        self.active = None

    def to_json(self) -> dict[str, Any]:
        """The state as a deep copy in plain values, as `dataclasses.asdict` would give it (less the version and
        the saved copy); built field by field, since `asdict` deep-copied the saved copy only to drop it, and
        took 3.6% of the event loop's time in the load test."""
        return {
            "active": _fields(self.active, _RUN_FIELDS) if self.active is not None else None,
            "identity": _fields(self.identity, _IDENTITY_FIELDS) if self.identity is not None else None,
            "unresolved_streak": self.unresolved_streak,
            "recent": _copy(self.recent),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], version: int) -> SessionDialogue:
        active = data.get("active")
        identity = data.get("identity")
        state = cls(
            active=FlowRun(**active) if active else None,
            identity=Identity(**identity) if identity else None,
            unresolved_streak=int(data.get("unresolved_streak", 0)),
            recent=list(data.get("recent", [])),
            version=version,
        )
        state.saved = state.to_json()  # a deep copy: flows change their slots in place
        return state


_RUN_FIELDS = tuple(f.name for f in fields(FlowRun))
_IDENTITY_FIELDS = tuple(f.name for f in fields(Identity))


def _fields(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _copy(getattr(obj, name)) for name in names}


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like values (dicts, lists, tuples); anything else is kept, as `asdict` deep-copies it
    and these are immutable here (strings, numbers)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    return value


class DialogueStates:
    """Loads and saves `SessionDialogue` through the conversation store's database."""

    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    async def load(self, session_id: str, *, new_session: bool = False) -> SessionDialogue:
        """The session's state; `new_session`: the session was created by this very turn, so it has none yet and
        nothing is read (a turn of the same session that saves first is caught by `save` as a conflict)."""
        if new_session:
            return SessionDialogue()
        row = await self.store.transaction(lambda conn: _LOAD.first(conn, {"b_session_id": session_id}), write=False)
        if row is None:
            return SessionDialogue()
        return SessionDialogue.from_json(dict(row.data or {}), int(row.version))

    async def save(self, session_id: str, tenant_id: str, state: SessionDialogue) -> None:
        """Write the state; ConflictError when another turn saved this session since it was loaded.

        A state that did not change is not written (most turns start no flow): one transaction less per
        stage that saves, and no version bump that would make a concurrent turn's real change conflict.
        """
        data = state.to_json()
        if data == (state.saved if state.saved is not None else SessionDialogue().to_json()):
            return
        expected = state.version

        def transaction(conn: Connection) -> int:
            now: datetime = utcnow()
            if expected == 0:
                # The first state of the session; a row that is there already was saved by another turn since
                # this one loaded none (the primary key refuses the second): a conflict, as below.
                values = {"session_id": session_id, "tenant_id": tenant_id, "data": data, "version": 1}
                _INSERT.execute(conn, {**values, "updated_at": now})
                return 1
            changed = _UPDATE.execute(
                conn,
                {
                    "b_session_id": session_id,
                    "b_expected": expected,
                    "b_data": data,
                    "b_version": expected + 1,
                    "b_now": now,
                },
            )
            return 1 if changed == 1 else 0

        try:
            saved = await self.store.transaction(transaction, write=True)
        except IntegrityError:
            saved = 0
        if not saved:
            raise ConflictError("this conversation was updated by another message at the same time; please resend")
        state.version = expected + 1
        state.saved = data
