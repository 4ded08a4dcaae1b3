"""The HTTP layer: builds the services once, checks the bearer token, maps routes and errors to JSON."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from lumo_shop.clock import Clock
from lumo_shop.dataset import Dataset
from lumo_shop.db import open_engine, open_reader, session_factory
from lumo_shop.errors import ShopError, Unauthorized
from lumo_shop.idempotency import WriteLog, WriteOutcome
from lumo_shop.reads import ShopReads
from lumo_shop.schemas import (
    AddressRequest,
    AfterSaleCreated,
    CancelRequest,
    ClockOut,
    ErrorResponse,
    ExchangeRequest,
    Health,
    InvoiceCreated,
    InvoiceRequest,
    OrderList,
    OrderOut,
    ProductOut,
    ProductSearch,
    RefundStatus,
    ResetResult,
    ReturnRequest,
    ShipmentList,
    ShipmentOut,
    UserOut,
    VerifyRequest,
    VerifyResult,
    WriteList,
)
from lumo_shop.seed import reseed_engine, seed_engine
from lumo_shop.views import ShopContext
from lumo_shop.writes import ShopWrites

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "lumo-demo-token"
REPLAYED_HEADER = "Idempotent-Replayed"


def create_app(db_path: Path, data_dir: Path, now: str = "as_of", token: str | None = None) -> FastAPI:
    """The demo shop backend on the SQLite file `db_path`, seeded from `data_dir` when empty."""
    dataset = Dataset(data_dir)
    shop = dataset.shop()
    clock = Clock.from_spec(now, as_of=dataset.as_of(), tz=shop.tz)
    engine = open_engine(db_path)
    seed_engine(engine, dataset)
    sessions = session_factory(engine)
    ctx = ShopContext(shop=shop, sessions=sessions, clock=clock)
    reader = open_reader(db_path)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        reader.dispose()
        engine.dispose()

    app = FastAPI(
        title="Lumo demo shop backend",
        version="1.0.0",
        description="The simulated back office of the Lumo demo shop: orders, parcels, products and after-sales.",
        lifespan=lifespan,
    )
    app.state.token = token or DEFAULT_TOKEN
    app.state.clock = clock
    app.state.reads = ShopReads(replace(ctx, sessions=session_factory(reader)))
    app.state.writes = ShopWrites(ctx, WriteLog(sessions, clock))
    app.state.engine = engine
    app.state.dataset = dataset
    app.include_router(public)
    app.include_router(protected)
    _install_error_handlers(app)
    return app


# ---------------------------------------------------------------- dependencies

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` (LUMO_SHOP_TOKEN)")


# The dependencies do no I/O, so they are `async`: FastAPI runs a plain `def` dependency in a worker thread.


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected: str = request.app.state.token
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("unauthorized", "Missing or wrong bearer token: send `Authorization: Bearer <token>`.")


async def _reads(request: Request) -> ShopReads:
    return cast(ShopReads, request.app.state.reads)


async def _writes(request: Request) -> ShopWrites:
    return cast(ShopWrites, request.app.state.writes)


Reads = Annotated[ShopReads, Depends(_reads)]
Writes = Annotated[ShopWrites, Depends(_writes)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Required on writes; the same key and body replay the first answer"),
]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses of an operation (401 and 422 apply to every protected one)."""
    return {code: {"model": ErrorResponse} for code in sorted({401, 422, *codes})}


WRITE_ERRORS = _errors(400, 404, 409)

public = APIRouter()
protected = APIRouter(dependencies=[Depends(require_token)])


# ---------------------------------------------------------------- routes
# Reads are `async` and query SQLite on the event loop, on a connection of their own (`open_reader`): short indexed
# look-ups in a local file in WAL mode, where a reader never waits for a writer. That costs the server half the CPU
# of a hop to a worker thread and back (side by side, 1,500 requests of kefu's look-ups at concurrency 16: 1.1
# against 2.2 ms per request). Writes stay plain `def` and run in the thread pool: a write can wait for SQLite's
# write lock (busy_timeout).


@public.get("/healthz", operation_id="health", response_model=Health, tags=["service"])
async def health() -> Health:
    return Health()


@protected.get("/clock", operation_id="getClock", response_model=ClockOut, responses=_errors(), tags=["service"])
async def get_clock(request: Request) -> ClockOut:
    clock: Clock = request.app.state.clock
    return ClockOut(now=clock.now())


@protected.post(
    "/identity/verify",
    operation_id="verifyIdentity",
    response_model=VerifyResult,
    responses=_errors(),
    tags=["users"],
)
async def verify_identity(body: VerifyRequest, reads: Reads) -> VerifyResult:
    return reads.verify_identity(body)


@protected.get(
    "/users/{user_id}", operation_id="getUser", response_model=UserOut, responses=_errors(404), tags=["users"]
)
async def get_user(user_id: str, reads: Reads) -> UserOut:
    return reads.get_user(user_id)


@protected.get(
    "/users/{user_id}/orders",
    operation_id="listUserOrders",
    response_model=OrderList,
    responses=_errors(404),
    tags=["users"],
)
async def list_user_orders(
    user_id: str,
    reads: Reads,
    status: Annotated[str | None, Query(description="Only orders in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> OrderList:
    return reads.list_user_orders(user_id, status or None, limit)


@protected.get(
    "/orders/{order_id}", operation_id="getOrder", response_model=OrderOut, responses=_errors(404), tags=["orders"]
)
async def get_order(order_id: str, reads: Reads) -> OrderOut:
    return reads.get_order(order_id)


@protected.get(
    "/orders/{order_id}/logistics",
    operation_id="getOrderLogistics",
    response_model=ShipmentList,
    responses=_errors(404),
    tags=["logistics"],
)
async def get_order_logistics(order_id: str, reads: Reads) -> ShipmentList:
    return reads.get_order_logistics(order_id)


@protected.get(
    "/logistics/{tracking_number}",
    operation_id="getTracking",
    response_model=ShipmentOut,
    responses=_errors(404),
    tags=["logistics"],
)
async def get_tracking(tracking_number: str, reads: Reads) -> ShipmentOut:
    return reads.get_tracking(tracking_number)


@protected.get(
    "/products", operation_id="searchProducts", response_model=ProductSearch, responses=_errors(), tags=["products"]
)
async def search_products(
    reads: Reads,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Words of a product name, brand or category")],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> ProductSearch:
    """Find products by name ("降噪耳机", "Vela X7", "air fryer"), with their total stock."""
    return reads.search_products(q, limit)


@protected.get(
    "/products/{sku}", operation_id="getProduct", response_model=ProductOut, responses=_errors(404), tags=["products"]
)
async def get_product(sku: str, reads: Reads) -> ProductOut:
    return reads.get_product(sku)


@protected.get(
    "/orders/{order_id}/refund",
    operation_id="getRefund",
    response_model=RefundStatus,
    responses=_errors(404),
    tags=["after-sales"],
)
async def get_refund(order_id: str, reads: Reads) -> RefundStatus:
    return reads.get_refund(order_id)


@protected.post(
    "/orders/{order_id}/cancel",
    operation_id="cancelOrder",
    response_model=OrderOut,
    responses=WRITE_ERRORS,
    tags=["orders"],
)
def cancel_order(order_id: str, body: CancelRequest, writes: Writes, key: IdempotencyKey = None) -> JSONResponse:
    return _written(writes.cancel(order_id, body, key))


@protected.post(
    "/orders/{order_id}/returns",
    operation_id="createReturn",
    status_code=201,
    response_model=AfterSaleCreated,
    responses=WRITE_ERRORS,
    tags=["after-sales"],
)
def create_return(order_id: str, body: ReturnRequest, writes: Writes, key: IdempotencyKey = None) -> JSONResponse:
    return _written(writes.create_return(order_id, body, key))


@protected.post(
    "/orders/{order_id}/exchanges",
    operation_id="createExchange",
    status_code=201,
    response_model=AfterSaleCreated,
    responses=WRITE_ERRORS,
    tags=["after-sales"],
)
def create_exchange(order_id: str, body: ExchangeRequest, writes: Writes, key: IdempotencyKey = None) -> JSONResponse:
    return _written(writes.create_exchange(order_id, body, key))


@protected.post(
    "/orders/{order_id}/address",
    operation_id="changeAddress",
    response_model=OrderOut,
    responses=WRITE_ERRORS,
    tags=["orders"],
)
def change_address(order_id: str, body: AddressRequest, writes: Writes, key: IdempotencyKey = None) -> JSONResponse:
    return _written(writes.change_address(order_id, body, key))


@protected.post(
    "/orders/{order_id}/invoices",
    operation_id="requestInvoice",
    status_code=201,
    response_model=InvoiceCreated,
    responses=WRITE_ERRORS,
    tags=["orders"],
)
def request_invoice(order_id: str, body: InvoiceRequest, writes: Writes, key: IdempotencyKey = None) -> JSONResponse:
    return _written(writes.request_invoice(order_id, body, key))


@protected.get(
    "/admin/writes", operation_id="listWrites", response_model=WriteList, responses=_errors(), tags=["admin"]
)
async def list_writes(reads: Reads, order_id: str | None = None) -> WriteList:
    return reads.list_writes(order_id)


@protected.post(
    "/admin/reset", operation_id="resetData", response_model=ResetResult, responses=_errors(), tags=["admin"]
)
def reset_data(request: Request, writes: Writes) -> ResetResult:
    """Start over: every table, the write log included, reloaded from the dataset (scenario tests call it)."""
    with writes.log.lock:
        orders = reseed_engine(request.app.state.engine, request.app.state.dataset)
    log.info("database reset: %d orders loaded from the dataset", orders)
    return ResetResult(orders=orders)


def _written(outcome: WriteOutcome) -> JSONResponse:
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=headers)


# ---------------------------------------------------------------- errors


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    async def shop_error(_: Request, exc: Exception) -> JSONResponse:
        err = cast(ShopError, exc)
        extra = {"WWW-Authenticate": "Bearer"} if isinstance(err, Unauthorized) else {}
        return _error(err.status_code, err.code, err.message, err.details, **extra)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        problems = []
        for e in cast(RequestValidationError, exc).errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "Invalid request: " + "; ".join(problems))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = cast(StarletteHTTPException, exc).status_code
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = f"No endpoint {request.method} {request.url.path}" if status in codes else str(exc)
        return _error(status, codes.get(status, f"http_{status}"), message)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "The shop backend failed unexpectedly; see its log.")

    app.add_exception_handler(ShopError, shop_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
