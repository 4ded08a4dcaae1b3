"""Admin view and switches of gray releases: /v1/admin/release/experiments (docs/release.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from kefu.api.dependencies import ServicesDep
from kefu.api.security import Operator, require_role
from kefu.errors import NotFoundError
from kefu.release import Release
from kefu.release.service import ExperimentReport
from kefu.release.state import Action, StateChange
from kefu.services import Services

router = APIRouter(prefix="/v1/admin/release", tags=["admin"])
AdminOp = Annotated[Operator, Depends(require_role("admin"))]
ViewerOp = Annotated[Operator, Depends(require_role("viewer"))]
ExperimentId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the needed role (switches need admin)"},
    404: {"description": "No such experiment in the release file, or no release file"},
    409: {"description": "The switch does not apply to the experiment's state (e.g. rolling back twice)"},
    422: {"description": "Malformed request"},
}


class ArmWindowOut(BaseModel):
    """One arm's bot replies in the rollback rule's window, from every worker."""

    turns: int
    failed: int
    """Turns the arm failed: its model failed (covered by the control's) or the customer got an error reply."""
    error_rate: float | None
    customer_errors: int
    fallbacks: int
    """Canary turns whose model failed and the control's answered."""
    handoffs: int
    handoff_rate: float | None
    avg_latency_ms: float | None


class RuleOut(BaseModel):
    enabled: bool
    window_s: float
    min_turns: int
    max_error_rate: float
    max_handoff_rate: float | None
    max_handoff_increase: float | None


class ArmOut(BaseModel):
    """What an arm changes (never API keys), and the models its turns use."""

    name: str
    llm_model: str | None
    llm_base_url: str | None
    prompt_version: str | None
    flows_dir: str | None
    models: dict[str, str]
    """The model per role (chat, classification, rewrite) of the running arm."""
    window: ArmWindowOut


class ExperimentOut(BaseModel):
    id: str
    description: str
    enabled: bool
    """The experiment the release file enables (only one runs at a time)."""
    state: str | None
    """running, paused, rolled_back, promoted; None when it never ran here."""
    share: float | None
    reason: str | None
    updated_by: str | None
    updated_at: datetime | None
    window_since: datetime | None
    """Start of the window the arms' numbers cover (for a rolled-back canary: the window before its rollback)."""
    rollback_rule: RuleOut
    verdict: str | None
    """What the rollback rule makes of the window now."""
    arms: list[ArmOut]

    @classmethod
    def of(cls, report: ExperimentReport) -> ExperimentOut:
        spec, state = report.spec, report.state
        arms = []
        for name in ("control", "canary"):
            arm = getattr(spec, name)
            llm: dict[str, Any] = arm.llm or {}
            arms.append(
                ArmOut(
                    name=name,
                    llm_model=llm.get("model"),
                    llm_base_url=_without_credentials(llm.get("base_url")),
                    prompt_version=arm.prompt_version,
                    flows_dir=str(arm.flows_dir) if arm.flows_dir is not None else None,
                    models=report.models.get(name, {}),
                    window=ArmWindowOut(**report.arms[name].as_dict()),
                )
            )
        verdict = report.verdict
        return cls(
            id=spec.id,
            description=spec.description,
            enabled=report.active,
            state=state.state if state else None,
            share=state.share if state else None,
            reason=state.reason if state else None,
            updated_by=state.updated_by if state else None,
            updated_at=state.updated_at if state else None,
            window_since=report.window_since,
            rollback_rule=RuleOut(**spec.rollback.model_dump()),
            verdict=verdict.reason if verdict else None,
            arms=arms,
        )


class Switch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    """Why: kept in the audit record."""


class ShareSwitch(Switch):
    share: float = Field(ge=0, le=100)
    """Percent of new sessions assigned to the canary; sessions already assigned keep their arm."""


class ResumeSwitch(Switch):
    share: float | None = Field(default=None, gt=0, le=100)
    """The share to resume with; default the share it had (required after a rollback, which set it to 0)."""


class ChangeOut(BaseModel):
    """A switch as audited: who, what, and the state before and after."""

    experiment: str
    action: str
    actor: str
    before: dict[str, Any]
    after: dict[str, Any]

    @classmethod
    def of(cls, change: StateChange) -> ChangeOut:
        return cls(
            experiment=change.after.id,
            action=change.action,
            actor=change.actor,
            before={"state": change.before.state, "share": change.before.share},
            after={"state": change.after.state, "share": change.after.share},
        )


def _without_credentials(url: Any) -> str | None:
    """A base URL for display: a user or password in it is left out."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _release(services: Services) -> Release:
    if services.release is None:
        raise NotFoundError("no release file: add <shop dir>/release.yaml or set KEFU_RELEASE__FILE (docs/release.md)")
    return services.release


@router.get("/experiments", response_model=list[ExperimentOut], responses=_ERRORS)
async def list_experiments(op: ViewerOp, services: ServicesDep) -> list[ExperimentOut]:
    """The release file's experiments with their state and each arm's recent turns (viewer role)."""
    return [ExperimentOut.of(r) for r in await _release(services).reports()]


@router.get("/experiments/{experiment_id}", response_model=ExperimentOut, responses=_ERRORS)
async def get_experiment(experiment_id: ExperimentId, op: ViewerOp, services: ServicesDep) -> ExperimentOut:
    """One experiment, its state and each arm's recent turns (viewer role)."""
    return ExperimentOut.of(await _release(services).report(experiment_id))


async def _switch(
    services: Services, op: Operator, experiment_id: str, action: Action, body: Switch, share: float | None = None
) -> ChangeOut:
    change = await _release(services).change(
        experiment_id, action, actor=op.actor, tenant_id=op.tenant_id, share=share, reason=body.reason
    )
    return ChangeOut.of(change)


@router.post("/experiments/{experiment_id}/share", response_model=ChangeOut, responses=_ERRORS)
async def set_share(experiment_id: ExperimentId, body: ShareSwitch, op: AdminOp, services: ServicesDep) -> ChangeOut:
    """Change the canary's share of new sessions (admin role; audited)."""
    return await _switch(services, op, experiment_id, "share", body, body.share)


@router.post("/experiments/{experiment_id}/pause", response_model=ChangeOut, responses=_ERRORS)
async def pause(experiment_id: ExperimentId, body: Switch, op: AdminOp, services: ServicesDep) -> ChangeOut:
    """Assign no more new sessions to the canary; its sessions keep it (admin role; audited)."""
    return await _switch(services, op, experiment_id, "pause", body)


@router.post("/experiments/{experiment_id}/resume", response_model=ChangeOut, responses=_ERRORS)
async def resume(experiment_id: ExperimentId, body: ResumeSwitch, op: AdminOp, services: ServicesDep) -> ChangeOut:
    """Run a paused, rolled-back or promoted experiment again (admin role; audited)."""
    return await _switch(services, op, experiment_id, "resume", body, body.share)


@router.post("/experiments/{experiment_id}/rollback", response_model=ChangeOut, responses=_ERRORS)
async def rollback(experiment_id: ExperimentId, body: Switch, op: AdminOp, services: ServicesDep) -> ChangeOut:
    """Send every session, the canary's included, to the control arm (admin role; audited)."""
    return await _switch(services, op, experiment_id, "rollback", body)


@router.post("/experiments/{experiment_id}/promote", response_model=ChangeOut, responses=_ERRORS)
async def promote(experiment_id: ExperimentId, body: Switch, op: AdminOp, services: ServicesDep) -> ChangeOut:
    """Send every session to the canary arm (admin role; audited); then make it the configuration and drop the
    experiment from the release file."""
    return await _switch(services, op, experiment_id, "promote", body)
