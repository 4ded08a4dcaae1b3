"""The pages: the demo landing page at /, the agent console at /console, the embeddable widget under /static."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from kefu.api.security import page_csp

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
router = APIRouter(include_in_schema=False)
_CONSOLE = STATIC_DIR / "console.html"
_ANALYTICS = STATIC_DIR / "analytics.html"
_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_CONSOLE_HEADERS = {"Content-Security-Policy": page_csp(_CONSOLE), **_PAGE_HEADERS}
_ANALYTICS_HEADERS = {"Content-Security-Policy": page_csp(_ANALYTICS), **_PAGE_HEADERS}


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/console")
async def console() -> FileResponse:
    """The agent console: sign in, take customers from the queue, answer them (see docs/console.md)."""
    return FileResponse(_CONSOLE, media_type="text/html; charset=utf-8", headers=_CONSOLE_HEADERS)


@router.get("/console/analytics")
async def analytics() -> FileResponse:
    """Service analytics for operators (viewer role and up; see docs/analytics.md)."""
    return FileResponse(_ANALYTICS, media_type="text/html; charset=utf-8", headers=_ANALYTICS_HEADERS)
