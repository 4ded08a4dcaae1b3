"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kefu.api.dependencies import ServicesDep
from kefu.errors import KefuError
from kefu.store.redis_check import ping_redis

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not ready"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready to take turns: the store answers, Redis answers (when configured) and the models are loaded."""
    checks: dict[str, str] = {}
    ready = True
    try:
        await services.store.ping()
        checks["database"] = "ok"
    except KefuError as exc:
        checks["database"] = str(exc)
        ready = False
    if services.settings.redis_url:
        # Without Redis this replica would neither share rate limits nor reach customers on other replicas.
        problem = await ping_redis(services.settings.redis_url)
        checks["redis"] = problem or "ok"
        ready = ready and problem is None
    for role, backend in services.llms.items():
        checks[f"llm.{role}"] = backend.name
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
