"""Admin endpoints for access control: operators, API keys, the sensitive-word list, audit, privacy erasure."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from kefu.api.dependencies import ServicesDep
from kefu.api.security import Operator, access_of, require_role
from kefu.auth.accounts import ApiKeyRecord, OperatorRecord

router = APIRouter(prefix="/v1/admin", tags=["admin"])
AdminOp = Annotated[Operator, Depends(require_role("admin"))]
ViewerOp = Annotated[Operator, Depends(require_role("viewer"))]
_ID = r"^[A-Za-z0-9_-]{1,64}$"
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the needed role"},
    404: {"description": "Not found in your tenant"},
    409: {"description": "Conflict (e.g. the username is taken)"},
    422: {"description": "Malformed request"},
}


class OperatorOut(BaseModel):
    id: str
    username: str
    role: str
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, r: OperatorRecord) -> OperatorOut:
        return cls(id=r.id, username=r.username, role=r.role, active=r.active, created_at=r.created_at)


class OperatorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=3, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=10, max_length=1024)
    role: Literal["admin", "agent", "viewer"]


class OperatorUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "agent", "viewer"] | None = None
    active: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=1024)


class ApiKeyOut(BaseModel):
    id: str
    channel: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    key: str | None = Field(default=None, description="The key itself: shown once, at creation or rotation.")

    @classmethod
    def of(cls, r: ApiKeyRecord, key: str | None = None) -> ApiKeyOut:
        return cls(
            id=r.id,
            channel=r.channel,
            name=r.name,
            prefix=r.prefix,
            created_at=r.created_at,
            revoked_at=r.revoked_at,
            key=key,
        )


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(pattern=r"^([a-z0-9_-]{1,32}|\*)$")
    name: str = Field(min_length=1, max_length=128)


class SensitiveWords(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=10_000)


class AuditEventOut(BaseModel):
    id: int
    actor: str
    action: str
    target: str | None
    data: dict[str, Any]
    created_at: datetime


class AuditVerify(BaseModel):
    ok: bool
    events: int
    problem: str


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)


class EraseResult(BaseModel):
    user_id: str
    sessions_deleted: int


class Overview(BaseModel):
    sessions: int


# ---------------------------------------------------------------- operators
@router.get("/users", response_model=list[OperatorOut], responses=_ERRORS)
async def list_users(op: AdminOp, services: ServicesDep) -> list[OperatorOut]:
    """The operators of your tenant."""
    return [OperatorOut.of(r) for r in await access_of(services).accounts.list_operators(tenant_id=op.tenant_id)]


@router.post("/users", response_model=OperatorOut, status_code=201, responses=_ERRORS)
async def create_user(body: OperatorCreate, op: AdminOp, services: ServicesDep) -> OperatorOut:
    """Create an operator in your tenant."""
    access = access_of(services)
    record = await access.accounts.create_operator(
        username=body.username, password=body.password, role=body.role, tenant_id=op.tenant_id
    )
    await access.audit(
        actor=op.actor, action="user.create", tenant_id=op.tenant_id, target=record.id, data={"role": body.role}
    )
    return OperatorOut.of(record)


@router.patch("/users/{operator_id}", response_model=OperatorOut, responses=_ERRORS)
async def update_user(
    operator_id: Annotated[str, Path(pattern=_ID)], body: OperatorUpdate, op: AdminOp, services: ServicesDep
) -> OperatorOut:
    """Change an operator's role, status or password (their existing tokens stop working)."""
    access = access_of(services)
    record = await access.accounts.update_operator(
        operator_id, tenant_id=op.tenant_id, role=body.role, active=body.active, password=body.password
    )
    changes: dict[str, Any] = {k: v for k, v in {"role": body.role, "active": body.active}.items() if v is not None}
    if body.password is not None:
        changes["password"] = "changed"
    await access.audit(actor=op.actor, action="user.update", tenant_id=op.tenant_id, target=operator_id, data=changes)
    return OperatorOut.of(record)


# ---------------------------------------------------------------- API keys
@router.get("/api-keys", response_model=list[ApiKeyOut], responses=_ERRORS)
async def list_keys(op: AdminOp, services: ServicesDep) -> list[ApiKeyOut]:
    """Your tenant's channel API keys (never the keys themselves)."""
    return [ApiKeyOut.of(r) for r in await access_of(services).accounts.list_keys(tenant_id=op.tenant_id)]


@router.post("/api-keys", response_model=ApiKeyOut, status_code=201, responses=_ERRORS)
async def create_key(body: ApiKeyCreate, op: AdminOp, services: ServicesDep) -> ApiKeyOut:
    """Issue a channel API key; the response is the only time the key is shown."""
    access = access_of(services)
    record, key = await access.accounts.create_key(tenant_id=op.tenant_id, channel=body.channel, name=body.name)
    await access.audit(
        actor=op.actor,
        action="api_key.create",
        tenant_id=op.tenant_id,
        target=record.id,
        data={"channel": body.channel, "name": body.name},
    )
    return ApiKeyOut.of(record, key)


@router.post("/api-keys/{key_id}/rotate", response_model=ApiKeyOut, status_code=201, responses=_ERRORS)
async def rotate_key(key_id: Annotated[str, Path(pattern=_ID)], op: AdminOp, services: ServicesDep) -> ApiKeyOut:
    """Revoke a key and issue its replacement for the same channel."""
    access = access_of(services)
    record, key = await access.accounts.rotate_key(key_id, tenant_id=op.tenant_id)
    await access.audit(
        actor=op.actor, action="api_key.rotate", tenant_id=op.tenant_id, target=key_id, data={"new_key": record.id}
    )
    return ApiKeyOut.of(record, key)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut, responses=_ERRORS)
async def revoke_key(key_id: Annotated[str, Path(pattern=_ID)], op: AdminOp, services: ServicesDep) -> ApiKeyOut:
    """Revoke a key at once."""
    access = access_of(services)
    record = await access.accounts.revoke_key(key_id, tenant_id=op.tenant_id)
    await access.audit(actor=op.actor, action="api_key.revoke", tenant_id=op.tenant_id, target=key_id)
    return ApiKeyOut.of(record)


# ---------------------------------------------------------------- configuration
@router.get("/config/sensitive-words", response_model=SensitiveWords, responses=_ERRORS)
async def get_words(op: ViewerOp, services: ServicesDep) -> SensitiveWords:
    """The sensitive words your tenant's operators added (the built-in list is in the package)."""
    return SensitiveWords(words=await access_of(services).accounts.sensitive_words(tenant_id=op.tenant_id))


@router.put("/config/sensitive-words", response_model=SensitiveWords, responses=_ERRORS)
async def put_words(body: SensitiveWords, op: AdminOp, services: ServicesDep) -> SensitiveWords:
    """Replace your tenant's sensitive-word list; the guards use it from the next message on."""
    access = access_of(services)
    before = set(await access.accounts.sensitive_words(tenant_id=op.tenant_id))
    words = await access.accounts.replace_sensitive_words(body.words, tenant_id=op.tenant_id)
    access.safety.set_operator_words(op.tenant_id, words)
    await access.audit(
        actor=op.actor,
        action="config.sensitive_words",
        tenant_id=op.tenant_id,
        data={"added": len(set(words) - before), "removed": len(before - set(words)), "total": len(words)},
    )
    return SensitiveWords(words=words)


# ---------------------------------------------------------------- audit, privacy, analytics
@router.get("/audit", response_model=list[AuditEventOut], responses=_ERRORS)
async def audit_events(
    op: AdminOp,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> list[AuditEventOut]:
    """Your tenant's newest audit events."""
    rows = await services.store.audit_events(tenant_id=op.tenant_id, limit=limit, action=action)
    return [
        AuditEventOut(id=r.id, actor=r.actor, action=r.action, target=r.target, data=r.data, created_at=r.created_at)
        for r in rows
    ]


@router.get("/audit/verify", response_model=AuditVerify, responses=_ERRORS)
async def audit_verify(op: AdminOp, services: ServicesDep) -> AuditVerify:
    """Recompute the audit hash chain (all tenants: the chain is one)."""
    ok, count, problem = await services.store.verify_audit_chain()
    return AuditVerify(ok=ok, events=count, problem=problem)


@router.post("/privacy/erase", response_model=EraseResult, responses=_ERRORS)
async def erase_customer(body: EraseRequest, op: AdminOp, services: ServicesDep) -> EraseResult:
    """Delete one customer's conversations in your tenant (a data-subject request)."""
    deleted = await services.store.erase_user(user_id=body.user_id, tenant_id=op.tenant_id)
    await access_of(services).audit(
        actor=op.actor,
        action="privacy.erase",
        tenant_id=op.tenant_id,
        target=body.user_id,
        data={"sessions_deleted": deleted},
    )
    return EraseResult(user_id=body.user_id, sessions_deleted=deleted)


@router.get("/analytics/overview", response_model=Overview, responses=_ERRORS)
async def overview(op: ViewerOp, services: ServicesDep) -> Overview:
    """Headline numbers of your tenant (viewer role and up)."""
    return Overview(sessions=await services.store.count_sessions(tenant_id=op.tenant_id))
