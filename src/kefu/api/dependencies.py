"""Request-scoped access to the services built at start-up."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from kefu.services import Services


def get_services(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


async def _services_dependency(conn: HTTPConnection) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per request.
    return get_services(conn)


ServicesDep = Annotated[Services, Depends(_services_dependency)]

__all__ = ["Request", "ServicesDep", "get_services"]
