"""Admin view of how the service did: GET /v1/admin/analytics (definitions in docs/analytics.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from kefu.analytics import ServiceAnalytics
from kefu.api.dependencies import ServicesDep
from kefu.api.security import Operator, require_role
from kefu.errors import ConfigError, UserError
from kefu.services import Services

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ViewerOp = Annotated[Operator, Depends(require_role("viewer"))]
DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)
_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "The range is empty, reversed or longer than a year"},
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the needed role"},
    422: {"description": "A date that cannot be read"},
}


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReasonCountOut(_Out):
    reason: str
    count: int


class IntentCountOut(_Out):
    day: str
    intent: str
    count: int


class QuestionCountOut(_Out):
    question: str
    count: int


class CsatOut(_Out):
    ratings: int
    average: float | None
    satisfied: int
    satisfied_share: float | None
    distribution: dict[int, int]


class ThumbsOut(_Out):
    up: int
    down: int


class HandlingOut(_Out):
    tickets: int
    claimed: int
    closed: int
    avg_first_response_s: float | None
    avg_handling_s: float | None


class ModelUsageOut(_Out):
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float


class UsageOut(_Out):
    prompt_tokens: int
    completion_tokens: int
    cost: float
    cost_per_conversation: float | None
    currency: str
    by_model: list[ModelUsageOut]


class ArmReportOut(_Out):
    """One gray-release arm: the conversations assigned to it (docs/release.md)."""

    experiment: str
    arm: str
    conversations: int
    resolved: int
    resolution_rate: float | None
    handed_off: int
    handoff_rate: float | None
    csat: CsatOut
    replies: int
    errors: int
    error_rate: float | None
    fallbacks: int
    avg_latency_ms: float | None


class AnalyticsOut(_Out):
    """The figures of docs/analytics.md for conversations started in [from, to) of your tenant."""

    tenant_id: str
    start: datetime
    end: datetime
    as_of: datetime
    resolution_window_minutes: int
    conversations: int
    resolved: int
    resolution_rate: float | None
    awaiting_window: int
    handed_off: int
    handoff_rate: float | None
    handoff_reasons: list[ReasonCountOut]
    csat: CsatOut
    thumbs: ThumbsOut
    intents_by_day: list[IntentCountOut]
    unanswered: int
    top_unanswered: list[QuestionCountOut]
    handling: HandlingOut
    usage: UsageOut
    arms: list[ArmReportOut] = []
    """Per experiment arm, when a gray release ran in the range (docs/release.md)."""


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _reports(services: Services) -> ServiceAnalytics:
    if services.analytics is None:
        raise ConfigError("analytics are not built for this app")
    return services.analytics


def _range(reports: ServiceAnalytics, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    until = _utc(end) if end is not None else _utc(reports.clock())
    since = _utc(start) if start is not None else until - DEFAULT_RANGE
    if since >= until:
        raise UserError(f"`from` ({since.isoformat()}) must be before `to` ({until.isoformat()})")
    if until - since > MAX_RANGE:
        raise UserError("the range is longer than 366 days: ask for a shorter one")
    return since, until


From = Annotated[datetime | None, Query(alias="from", description="ISO date or time (UTC unless it has an offset)")]
To = Annotated[datetime | None, Query(alias="to", description="exclusive; default: now")]


@router.get("/analytics", response_model=AnalyticsOut, responses=_ERRORS)
async def analytics(op: ViewerOp, services: ServicesDep, start: From = None, end: To = None) -> AnalyticsOut:
    """Resolution, handoffs, satisfaction, intents, unanswered questions, handling time and cost (viewer role)."""
    reports = _reports(services)
    since, until = _range(reports, start, end)
    report = await reports.report(tenant_id=op.tenant_id, start=since, end=until)
    return AnalyticsOut.model_validate(report)


class FeedbackItemOut(_Out):
    id: str
    session_id: str
    message_id: str | None
    kind: str
    """'thumb' (rating 1 up, -1 down) or 'csat' (rating 1-5)."""
    rating: int
    comment: str | None
    """As the customer wrote it, with personal data replaced."""
    created_at: datetime


@router.get("/feedback", response_model=list[FeedbackItemOut], responses=_ERRORS)
async def feedback(
    op: ViewerOp,
    services: ServicesDep,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FeedbackItemOut]:
    """Thumbs and conversation ratings given in the range, newest first, with their comments (viewer role)."""
    since, until = _range(_reports(services), start, end)
    rows = await services.store.list_feedback(tenant_id=op.tenant_id, start=since, end=until, limit=limit)
    return [FeedbackItemOut.model_validate(r) for r in rows]
