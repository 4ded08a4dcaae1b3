"""One report of how the service did for a tenant and a time range, computed by SQL aggregates in the store.

Every figure is defined in docs/analytics.md; the definitions live here as queries, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Join,
    Table,
    and_,
    case,
    exists,
    func,
    not_,
    or_,
    select,
    true,
)

from kefu.config import AnalyticsSettings
from kefu.store import ConversationStore
from kefu.store.dialogue_models import Ticket
from kefu.store.models import ChatMessage, ChatSession, Feedback
from kefu.store.repository import aware

_SESSIONS = cast(Table, ChatSession.__table__)
_MESSAGES = cast(Table, ChatMessage.__table__)
_FEEDBACK = cast(Table, Feedback.__table__)
_TICKETS = cast(Table, Ticket.__table__)

CONFIRMING_INTENT = "thanks_goodbye"
"""The customer's turn that counts as confirming the bot helped."""
UNANSWERED_ROUTES = ("no_answer", "oos")
"""Routes of replies that told the customer the bot had no answer (knowledge gaps, out of scope)."""
SATISFIED_FROM = 4
"""A conversation rating of this score or more counts as satisfied (CSAT)."""
TOP_QUESTIONS = 10


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class IntentCount:
    day: str
    """The UTC day, YYYY-MM-DD."""
    intent: str
    count: int


@dataclass(frozen=True, slots=True)
class QuestionCount:
    question: str
    """The customer's message with personal data redacted."""
    count: int


@dataclass(frozen=True, slots=True)
class Csat:
    ratings: int
    average: float | None
    satisfied: int
    """Ratings of 4 or 5."""
    satisfied_share: float | None
    distribution: dict[int, int]
    """Score (1-5) → how many conversations got it."""


@dataclass(frozen=True, slots=True)
class Thumbs:
    up: int
    down: int


@dataclass(frozen=True, slots=True)
class Handling:
    tickets: int
    claimed: int
    closed: int
    avg_first_response_s: float | None
    """Handoff → an agent claimed it, over claimed tickets."""
    avg_handling_s: float | None
    """Claimed → closed, over tickets both claimed and closed."""


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cost_per_conversation: float | None
    currency: str
    by_model: list[ModelUsage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ArmReport:
    """One arm of a gray release: the conversations assigned to it at their first turn (docs/release.md)."""

    experiment: str
    arm: str
    conversations: int
    resolved: int
    resolution_rate: float | None
    handed_off: int
    handoff_rate: float | None
    csat: Csat
    replies: int
    errors: int
    """Replies the customer got as an error (the bilingual apology)."""
    error_rate: float | None
    fallbacks: int
    """Replies where the canary's model failed and the control's answered."""
    avg_latency_ms: float | None


@dataclass(frozen=True, slots=True)
class ServiceReport:
    """The figures of docs/analytics.md for conversations started in [start, end)."""

    tenant_id: str
    start: datetime
    end: datetime
    as_of: datetime
    resolution_window_minutes: int
    conversations: int
    resolved: int
    resolution_rate: float | None
    awaiting_window: int
    """Answered without a handoff, but the customer may still come back: the window has not passed yet."""
    handed_off: int
    handoff_rate: float | None
    handoff_reasons: list[ReasonCount]
    csat: Csat
    thumbs: Thumbs
    intents_by_day: list[IntentCount]
    unanswered: int
    top_unanswered: list[QuestionCount]
    handling: Handling
    usage: Usage
    arms: list[ArmReport] = field(default_factory=list)
    """Per experiment arm, when a gray release assigned conversations of the range (docs/release.md)."""


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(dialect: str, later: ColumnElement[Any], earlier: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _day(dialect: str, at: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", at), "YYYY-MM-DD")
    return func.date(at)  # SQLite stores UTC text: 'YYYY-MM-DD HH:MM:SS.ffffff'


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class ServiceAnalytics:
    """Computes service reports from the conversation store; read-only."""

    def __init__(self, store: ConversationStore, settings: AnalyticsSettings, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    async def report(self, *, tenant_id: str, start: datetime, end: datetime) -> ServiceReport:
        as_of = aware(self.clock())
        return await self.store.transaction(
            lambda conn: self._report(conn, tenant_id, aware(start), aware(end), as_of), write=False, brief=False
        )

    def _report(
        self, conn: Connection, tenant_id: str, start: datetime, end: datetime, as_of: datetime
    ) -> ServiceReport:
        dialect = conn.dialect.name
        cohort = and_(_SESSIONS.c.tenant_id == tenant_id, _SESSIONS.c.created_at >= start, _SESSIONS.c.created_at < end)
        conversations, resolved, handed_off, awaiting = self._outcomes(conn, cohort, as_of)
        usage = self._usage(conn, cohort, conversations)
        return ServiceReport(
            tenant_id=tenant_id,
            start=start,
            end=end,
            as_of=as_of,
            resolution_window_minutes=self.settings.resolution_window_minutes,
            conversations=conversations,
            resolved=resolved,
            resolution_rate=_rate(resolved, conversations),
            awaiting_window=awaiting,
            handed_off=handed_off,
            handoff_rate=_rate(handed_off, conversations),
            handoff_reasons=self._reasons(conn, tenant_id, start, end),
            csat=self._csat(conn, cohort),
            thumbs=self._thumbs(conn, cohort),
            intents_by_day=self._intents(conn, dialect, tenant_id, start, end),
            unanswered=self._unanswered_count(conn, cohort),
            top_unanswered=self._top_unanswered(conn, cohort),
            handling=self._handling(conn, dialect, tenant_id, start, end),
            usage=usage,
            arms=self._arms(conn, cohort, as_of),
        )

    def _arms(self, conn: Connection, cohort: ColumnElement[bool], as_of: datetime) -> list[ArmReport]:
        """The figures above per experiment arm; a conversation counts for the arm it was assigned to (intention to
        treat), whichever arm answered its later turns after a rollback or a promotion."""
        s, m = _SESSIONS, _MESSAGES
        groups = conn.execute(
            select(s.c.release_experiment, s.c.release_arm)
            .where(cohort, s.c.release_experiment.is_not(None), s.c.release_arm.is_not(None))
            .group_by(s.c.release_experiment, s.c.release_arm)
            .order_by(s.c.release_experiment, s.c.release_arm.desc())
        ).all()
        reports = []
        for experiment, arm in groups:
            assigned = and_(cohort, s.c.release_experiment == experiment, s.c.release_arm == arm)
            conversations, resolved, handed_off, _ = self._outcomes(conn, assigned, as_of)
            replies, errors, fallbacks, latency = conn.execute(
                select(
                    func.count(),
                    _count_if(m.c.error_code.is_not(None)),
                    _count_if(m.c.arm_error.is_not(None)),
                    func.avg(m.c.latency_ms),
                )
                .select_from(m.join(s, s.c.id == m.c.session_id))
                .where(assigned, m.c.role == "assistant")
            ).one()
            reports.append(
                ArmReport(
                    experiment=str(experiment),
                    arm=str(arm),
                    conversations=conversations,
                    resolved=resolved,
                    resolution_rate=_rate(resolved, conversations),
                    handed_off=handed_off,
                    handoff_rate=_rate(handed_off, conversations),
                    csat=self._csat(conn, assigned),
                    replies=int(replies),
                    errors=int(errors),
                    error_rate=_rate(int(errors), int(replies)),
                    fallbacks=int(fallbacks),
                    avg_latency_ms=round(float(latency), 3) if latency is not None else None,
                )
            )
        return reports

    def _outcomes(self, conn: Connection, cohort: ColumnElement[bool], as_of: datetime) -> tuple[int, int, int, int]:
        """(conversations, resolved by the bot, handed off, answered but still inside the window)."""
        m = _MESSAGES
        is_bot = m.c.role == "assistant"
        per = (
            select(
                m.c.session_id.label("sid"),
                _count_if(is_bot).label("bot_replies"),
                func.max(case((is_bot, m.c.created_at))).label("last_bot"),
                func.max(case((m.c.role == "user", m.c.created_at))).label("last_user"),
                func.max(case((m.c.handoff == true(), 1), else_=0)).label("handed"),
                func.max(case((is_bot & (m.c.intent == CONFIRMING_INTENT), 1), else_=0)).label("thanked"),
            )
            .select_from(m.join(_SESSIONS, _SESSIONS.c.id == m.c.session_id))
            .where(cohort)
            .group_by(m.c.session_id)
            .having(_count_if(m.c.role == "user") > 0)
            .subquery("per_session")
        )
        last = _MESSAGES.alias("last_reply")
        last_reply = (
            select(last.c.id)
            .where(last.c.session_id == per.c.sid, last.c.role == "assistant")
            .order_by(last.c.created_at.desc(), last.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        # The last bot reply helped: not an error fallback, not an "I don't know".
        failed_last = exists().where(
            _MESSAGES.c.id == last_reply,
            or_(_MESSAGES.c.error_code.is_not(None), _MESSAGES.c.route.in_(UNANSWERED_ROUTES)),
        )
        thumbs = _FEEDBACK.c.session_id == per.c.sid, _FEEDBACK.c.kind == "thumb"
        thumb_up = exists().where(*thumbs, _FEEDBACK.c.rating > 0)
        thumb_down = exists().where(*thumbs, _FEEDBACK.c.rating < 0)
        ticket = exists().where(_TICKETS.c.session_id == per.c.sid)
        handed = or_(per.c.handed == 1, ticket)
        answered = and_(per.c.bot_replies > 0, not_(handed), not_(failed_last))
        confirmed = or_(per.c.thanked == 1, thumb_up)
        # Silence counts only when the customer did not say the bot was wrong and asked nothing after its reply.
        quiet = and_(per.c.last_user < per.c.last_bot, not_(thumb_down))
        cutoff = as_of - timedelta(minutes=self.settings.resolution_window_minutes)
        resolved = and_(answered, or_(confirmed, and_(quiet, per.c.last_bot <= cutoff)))
        awaiting = and_(answered, not_(confirmed), quiet, per.c.last_bot > cutoff)
        row = conn.execute(
            select(func.count(), _count_if(resolved), _count_if(handed), _count_if(awaiting)).select_from(per)
        ).one()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    @staticmethod
    def _reasons(conn: Connection, tenant_id: str, start: datetime, end: datetime) -> list[ReasonCount]:
        t = _TICKETS
        rows = conn.execute(
            select(t.c.reason, func.count().label("n"))
            .where(t.c.tenant_id == tenant_id, t.c.created_at >= start, t.c.created_at < end)
            .group_by(t.c.reason)
            .order_by(func.count().desc(), t.c.reason)
        ).all()
        return [ReasonCount(str(reason), int(n)) for reason, n in rows]

    @staticmethod
    def _feedback_of(cohort: ColumnElement[bool], kind: str) -> tuple[Join, ColumnElement[bool]]:
        f = _FEEDBACK
        return f.join(_SESSIONS, _SESSIONS.c.id == f.c.session_id), and_(cohort, f.c.kind == kind)

    def _csat(self, conn: Connection, cohort: ColumnElement[bool]) -> Csat:
        f = _FEEDBACK
        joined, where = self._feedback_of(cohort, "csat")
        rows = conn.execute(
            select(f.c.rating, func.count()).select_from(joined).where(where).group_by(f.c.rating)
        ).all()
        distribution = {int(score): int(n) for score, n in rows}
        ratings = sum(distribution.values())
        satisfied = sum(n for score, n in distribution.items() if score >= SATISFIED_FROM)
        total = sum(score * n for score, n in distribution.items())
        return Csat(
            ratings=ratings,
            average=round(total / ratings, 2) if ratings else None,
            satisfied=satisfied,
            satisfied_share=_rate(satisfied, ratings),
            distribution=dict(sorted(distribution.items())),
        )

    def _thumbs(self, conn: Connection, cohort: ColumnElement[bool]) -> Thumbs:
        f = _FEEDBACK
        joined, where = self._feedback_of(cohort, "thumb")
        up, down = conn.execute(
            select(_count_if(f.c.rating > 0), _count_if(f.c.rating < 0)).select_from(joined).where(where)
        ).one()
        return Thumbs(up=int(up), down=int(down))

    @staticmethod
    def _intents(conn: Connection, dialect: str, tenant_id: str, start: datetime, end: datetime) -> list[IntentCount]:
        m = _MESSAGES
        day = _day(dialect, m.c.created_at).label("day")
        rows = conn.execute(
            select(day, m.c.intent, func.count())
            .where(
                m.c.tenant_id == tenant_id,
                m.c.role == "assistant",
                m.c.intent.is_not(None),
                m.c.created_at >= start,
                m.c.created_at < end,
            )
            .group_by(day, m.c.intent)
            .order_by(day, func.count().desc(), m.c.intent)
        ).all()
        return [IntentCount(str(d), str(intent), int(n)) for d, intent, n in rows]

    @staticmethod
    def _unanswered_replies(cohort: ColumnElement[bool]) -> tuple[Join, ColumnElement[bool]]:
        m = _MESSAGES
        joined = m.join(_SESSIONS, _SESSIONS.c.id == m.c.session_id)
        return joined, and_(cohort, m.c.role == "assistant", m.c.route.in_(UNANSWERED_ROUTES))

    def _unanswered_count(self, conn: Connection, cohort: ColumnElement[bool]) -> int:
        joined, where = self._unanswered_replies(cohort)
        return int(conn.execute(select(func.count()).select_from(joined).where(where)).scalar_one())

    def _top_unanswered(self, conn: Connection, cohort: ColumnElement[bool]) -> list[QuestionCount]:
        joined, where = self._unanswered_replies(cohort)
        asked = _MESSAGES.alias("asked")
        # The redacted text where the guard found personal data; otherwise the text, which then holds none.
        question = func.coalesce(asked.c.redacted_text, asked.c.text).label("question")
        rows = conn.execute(
            select(question, func.count())
            .select_from(joined.join(asked, asked.c.id == _MESSAGES.c.reply_to))
            .where(where)
            .group_by(question)
            .order_by(func.count().desc(), question)
            .limit(TOP_QUESTIONS)
        ).all()
        return [QuestionCount(str(q), int(n)) for q, n in rows]

    @staticmethod
    def _handling(conn: Connection, dialect: str, tenant_id: str, start: datetime, end: datetime) -> Handling:
        t = _TICKETS
        claimed = t.c.claimed_at.is_not(None)
        worked = claimed & t.c.closed_at.is_not(None)
        row = conn.execute(
            select(
                func.count(),
                _count_if(claimed),
                _count_if(t.c.closed_at.is_not(None)),
                func.avg(case((claimed, _seconds(dialect, t.c.claimed_at, t.c.created_at)))),
                func.avg(case((worked, _seconds(dialect, t.c.closed_at, t.c.claimed_at)))),
            ).where(t.c.tenant_id == tenant_id, t.c.created_at >= start, t.c.created_at < end)
        ).one()
        return Handling(
            tickets=int(row[0]),
            claimed=int(row[1]),
            closed=int(row[2]),
            avg_first_response_s=round(float(row[3]), 3) if row[3] is not None else None,
            avg_handling_s=round(float(row[4]), 3) if row[4] is not None else None,
        )

    def _usage(self, conn: Connection, cohort: ColumnElement[bool], conversations: int) -> Usage:
        m = _MESSAGES
        rows = conn.execute(
            select(
                m.c.model,
                func.coalesce(func.sum(m.c.prompt_tokens), 0),
                func.coalesce(func.sum(m.c.completion_tokens), 0),
            )
            .select_from(m.join(_SESSIONS, _SESSIONS.c.id == m.c.session_id))
            .where(cohort, or_(m.c.prompt_tokens.is_not(None), m.c.completion_tokens.is_not(None)))
            .group_by(m.c.model)
            .order_by(m.c.model)
        ).all()
        models = []
        for model, prompt, completion in rows:
            price = self.settings.price(model)
            cost = int(prompt) / 1000 * price.input + int(completion) / 1000 * price.output
            models.append(ModelUsage(model, int(prompt), int(completion), round(cost, 6)))
        total = round(sum(u.cost for u in models), 6)
        return Usage(
            prompt_tokens=sum(u.prompt_tokens for u in models),
            completion_tokens=sum(u.completion_tokens for u in models),
            cost=total,
            cost_per_conversation=round(total / conversations, 6) if conversations else None,
            currency=self.settings.currency,
            by_model=models,
        )
