"""Backend actions as an operator configures them in actions.yaml and as a flow sees their outcomes.

HTTP goes through `httpx.MockTransport` (what the shop's API would answer), and over real loopback sockets for
the transport the app builds; Python actions are functions of this
module, named in the file as `tests.unit.test_connectors:<function>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kefu.connectors import Actions, load_actions
from kefu.connectors.http import HttpConnector
from kefu.connectors.python import ActionFailed
from kefu.errors import DataFileError

SHOP_ACTIONS = """\
# the shop's API, as kefu may call it
version: 1
connectors:
  shop:
    type: http
    base_url: "${KEFU_TEST_SHOP_URL:-http://shop.test}"
    headers:
      Authorization: "Bearer ${KEFU_TEST_SHOP_TOKEN:-demo-token}"
    timeout_s: 1
    retries: 2
actions:
  get_order:
    connector: shop
    kind: read
    method: GET
    path: /orders/{order_id}
    params: [order_id]
    identity_params: [order_id]
    response: {type: object, required: [order_id, status]}
  search_products:
    connector: shop
    kind: read
    method: GET
    path: /products
    params: [q]
    query: [q]
  create_return:
    connector: shop
    kind: write
    method: POST
    path: /orders/{order_id}/returns
    params: [order_id, reason_code, detail]
    required: [order_id, reason_code]
    response: {type: object, required: [id, status]}
"""

ORDER = {"order_id": "LM26110625", "status": "delivered"}


class Backend:
    """A scripted shop API: answers queued per request (a response, or an exception to raise), then `default`."""

    def __init__(self, *answers: httpx.Response | Exception, default: httpx.Response | None = None) -> None:
        self.answers = list(answers)
        self.default = default or httpx.Response(200, json=ORDER)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.fixture(autouse=True)
def _no_shop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEFU_TEST_SHOP_URL", "KEFU_TEST_SHOP_TOKEN", "KEFU_TEST_SECRET"):
        monkeypatch.delenv(name, raising=False)


def write_file(tmp_path: Path, text: str, name: str = "actions.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str, *, after: str | None = None) -> int:
    """1-based line of the first `needle` (below the first `after`, when given)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = line_of(path, after) if after is not None else 0
    return next(number for number, line in enumerate(lines, start=1) if number > start and needle in line)


@pytest.fixture
async def load(tmp_path: Path) -> AsyncIterator[Callable[..., Actions]]:
    """Load SHOP_ACTIONS (or another text) over a scripted backend, without backoff sleeps; closed afterwards.
    Without a backend, as the app loads it: HTTP goes over aiohttp to a real socket."""
    opened: list[Actions] = []

    def _load(backend: Backend | None, text: str = SHOP_ACTIONS) -> Actions:
        transports = {"shop": backend.transport()} if backend is not None else None
        actions = load_actions(write_file(tmp_path, text), transports=transports)
        connector = actions.connectors["shop"]
        assert isinstance(connector, HttpConnector)
        connector.backoff_s = 0.0
        opened.append(actions)
        return actions

    yield _load
    for actions in opened:
        await actions.aclose()


# ---- configuration: auth header and ${ENV:-default} ---------------------------------------------------------


async def test_defaults_from_the_file_are_used_when_the_environment_is_unset(load: Callable[..., Actions]) -> None:
    backend = Backend()
    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.ok and result.data == ORDER
    request = backend.requests[0]
    assert request.method == "GET"
    assert str(request.url) == "http://shop.test/orders/LM26110625"
    assert request.headers["Authorization"] == "Bearer demo-token"


async def test_environment_variables_replace_url_and_token(
    load: Callable[..., Actions], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_TEST_SHOP_URL", "https://api.shop.example/v2/")
    monkeypatch.setenv("KEFU_TEST_SHOP_TOKEN", "s3cret")
    backend = Backend()

    await load(backend).call("get_order", {"order_id": "LM26110625"})

    request = backend.requests[0]
    assert str(request.url) == "https://api.shop.example/v2/orders/LM26110625"
    assert request.headers["Authorization"] == "Bearer s3cret"


def test_a_variable_without_default_must_be_set(tmp_path: Path) -> None:
    path = write_file(tmp_path, SHOP_ACTIONS.replace("${KEFU_TEST_SHOP_TOKEN:-demo-token}", "${KEFU_TEST_SECRET}"))

    with pytest.raises(DataFileError) as caught:
        load_actions(path)

    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, "type: http")
    assert "KEFU_TEST_SECRET" in str(caught.value)
    assert "'shop'" in str(caught.value)


# ---- retries, timeouts and backend failures -----------------------------------------------------------------


async def test_a_read_is_retried_after_503_and_then_succeeds(load: Callable[..., Actions]) -> None:
    backend = Backend(httpx.Response(503, text="busy"))

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.ok and result.data == ORDER
    assert result.attempts == 2
    assert len(backend.requests) == 2


async def test_a_read_gives_up_after_its_retries(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(502, text="bad gateway"))

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert not result.ok
    assert result.error_code == "backend_error"
    assert result.unavailable
    assert result.attempts == 3
    assert len(backend.requests) == 3


async def test_a_write_is_never_retried(load: Callable[..., Actions]) -> None:
    backend = Backend(httpx.Response(503, text="busy"), default=httpx.Response(201, json={"id": "AS1", "status": "ok"}))

    result = await load(backend).call(
        "create_return", {"order_id": "LM26110625", "reason_code": "no_reason"}, idempotency_key="kefu-1"
    )

    assert not result.ok
    assert result.error_code == "backend_error"
    assert result.attempts == 1
    assert len(backend.requests) == 1


async def test_a_timed_out_write_is_not_sent_again(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(201, json={"id": "AS1", "status": "ok"}))
    backend.answers.append(httpx.ReadTimeout("slow"))

    result = await load(backend).call(
        "create_return", {"order_id": "LM26110625", "reason_code": "no_reason"}, idempotency_key="kefu-1"
    )

    assert result.error_code == "timeout"
    assert len(backend.requests) == 1


async def test_timeouts_become_timeout(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(200, json=ORDER))
    backend.answers.extend([httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow")])

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert not result.ok
    assert result.error_code == "timeout"
    assert result.unavailable
    assert result.attempts == 3


async def test_connection_refused_is_backend_unavailable(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(200, json=ORDER))
    backend.answers.extend([httpx.ConnectError("[Errno 111] Connection refused") for _ in range(3)])

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "backend_unavailable"
    assert result.unavailable
    assert "ConnectError" in result.message


async def test_a_server_error_is_backend_error_whatever_its_body_says(load: Callable[..., Actions]) -> None:
    body = {"error": {"code": "order_not_found", "message": "NullPointerException at OrderDao"}}
    backend = Backend(default=httpx.Response(500, json=body))

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "backend_error"
    assert result.status == 500
    assert result.unavailable


async def test_refused_credentials_are_backend_auth_without_the_backends_text(
    load: Callable[..., Actions], caplog: pytest.LogCaptureFixture
) -> None:
    body = {"error": {"code": "invalid_token", "message": "token demo-token expired for tenant lumo-internal"}}
    backend = Backend(default=httpx.Response(401, json=body))

    with caplog.at_level(logging.ERROR, logger="kefu.connectors.http"):
        result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "backend_auth"
    assert result.unavailable
    assert result.status == 401
    assert "demo-token" not in result.message and "lumo-internal" not in result.message
    assert "credentials" in result.message
    assert len(backend.requests) == 1  # refused credentials do not get better by retrying
    assert "lumo-internal" in caplog.text  # the operator sees why


async def test_a_business_error_keeps_the_backends_code_and_message(load: Callable[..., Actions]) -> None:
    body = {"error": {"code": "outside_return_window", "message": "签收已超过 7 天"}}
    backend = Backend(default=httpx.Response(422, json=body))

    result = await load(backend).call(
        "create_return", {"order_id": "LM26110625", "reason_code": "no_reason"}, idempotency_key="kefu-1"
    )

    assert not result.ok
    assert result.error_code == "outside_return_window"
    assert result.message == "签收已超过 7 天"
    assert result.status == 422
    assert not result.unavailable


@pytest.mark.parametrize(("status", "code"), [(404, "not_found"), (403, "forbidden"), (409, "http_409")])
async def test_an_error_status_without_a_code_gets_one(load: Callable[..., Actions], status: int, code: str) -> None:
    backend = Backend(default=httpx.Response(status))

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == code
    assert result.status == status
    assert len(backend.requests) == 1


async def test_a_response_that_does_not_match_the_schema_is_invalid(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(200, json={"order_id": "LM26110625"}))

    result = await load(backend).call("get_order", {"order_id": "LM26110625"})

    assert not result.ok
    assert result.error_code == "invalid_response"
    assert "status" in result.message
    assert result.unavailable


async def test_a_response_that_is_not_a_json_object_is_invalid(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(200, text="<html>maintenance</html>"))

    result = await load(backend).call("search_products", {"q": "耳机"})

    assert result.error_code == "invalid_response"


# ---- writes and idempotency ---------------------------------------------------------------------------------


async def test_a_write_without_idempotency_key_is_refused_before_any_request(load: Callable[..., Actions]) -> None:
    backend = Backend()
    actions = load(backend)

    with pytest.raises(ValueError, match="idempotency key"):
        await actions.call("create_return", {"order_id": "LM26110625", "reason_code": "no_reason"})

    assert backend.requests == []


async def test_a_write_sends_its_idempotency_key_and_a_json_body(load: Callable[..., Actions]) -> None:
    created = httpx.Response(201, json={"id": "AS1", "status": "pending"}, headers={"Idempotent-Replayed": "true"})
    backend = Backend(default=created)

    result = await load(backend).call(
        "create_return",
        {"order_id": "LM26110625", "reason_code": "no_reason", "user_id": "U2"},
        idempotency_key="kefu-abc",
    )

    assert result.ok and result.data == {"id": "AS1", "status": "pending"}
    assert result.replayed
    request = backend.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/orders/LM26110625/returns"
    assert request.headers["Idempotency-Key"] == "kefu-abc"
    # path parameters stay out of the body; arguments the action does not declare are never sent
    assert json.loads(request.content) == {"reason_code": "no_reason"}


async def test_a_read_sends_no_idempotency_key_and_no_body(load: Callable[..., Actions]) -> None:
    backend = Backend(default=httpx.Response(200, json={"products": []}))

    await load(backend).call("search_products", {"q": "降噪 耳机"})

    request = backend.requests[0]
    assert "Idempotency-Key" not in request.headers
    assert request.content == b""
    assert request.url.path == "/products"
    assert request.url.params["q"] == "降噪 耳机"


async def test_missing_arguments_and_unknown_actions_never_reach_the_backend(load: Callable[..., Actions]) -> None:
    backend = Backend()
    actions = load(backend)

    missing = await actions.call("create_return", {"order_id": "LM26110625", "reason_code": ""}, idempotency_key="k")
    unknown = await actions.call("delete_everything", {})

    assert missing.error_code == "missing_arguments" and "reason_code" in missing.message
    assert unknown.error_code == "unknown_action"
    assert backend.requests == []


async def test_path_parameters_are_url_quoted(load: Callable[..., Actions]) -> None:
    backend = Backend()

    await load(backend).call("get_order", {"order_id": "LM 1/../admin?x=1#y"})

    assert backend.requests[0].url.raw_path == b"/orders/LM%201%2F..%2Fadmin%3Fx%3D1%23y"


# ---- over real sockets, through the transport the app builds (aiohttp) --------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a raw HTTP server on loopback and point KEFU_TEST_SHOP_URL at it (under /api)."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api"
        monkeypatch.setenv("KEFU_TEST_SHOP_URL", url)
        return url

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


async def _request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def _json_response(status: str, payload: object, extra: str = "") -> bytes:
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_a_read_and_a_write_reach_a_real_server(
    serve: Callable[[Handler], Awaitable[str]], load: Callable[..., Actions]
) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def shop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                request = await _request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append(request)
            if request[0].startswith("POST"):
                writer.write(
                    _json_response("201 Created", {"id": "AS1", "status": "pending"}, "Idempotent-Replayed: true\r\n")
                )
            else:
                writer.write(_json_response("200 OK", ORDER))
            await writer.drain()

    await serve(shop)
    actions = load(None)

    read = await actions.call("search_products", {"q": "降噪 耳机"})
    write = await actions.call(
        "create_return", {"order_id": "LM26110625", "reason_code": "no_reason"}, idempotency_key="kefu-abc"
    )

    assert read.ok and read.data == ORDER and read.status == 200
    assert write.ok and write.data == {"id": "AS1", "status": "pending"} and write.replayed
    (get_line, get_headers, get_body), (post_line, post_headers, post_body) = seen
    assert get_line == "GET /api/products?q=%E9%99%8D%E5%99%AA+%E8%80%B3%E6%9C%BA HTTP/1.1"
    assert get_headers["authorization"] == "Bearer demo-token"
    assert get_headers["user-agent"].startswith("kefu/")
    assert "idempotency-key" not in get_headers and get_body == b""
    assert post_line == "POST /api/orders/LM26110625/returns HTTP/1.1"
    assert post_headers["idempotency-key"] == "kefu-abc"
    assert post_headers["content-type"] == "application/json"
    assert json.loads(post_body) == {"reason_code": "no_reason"}


async def test_nothing_listening_is_backend_unavailable_not_a_timeout(
    monkeypatch: pytest.MonkeyPatch, load: Callable[..., Actions]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KEFU_TEST_SHOP_URL", f"http://127.0.0.1:{port}")

    result = await load(None).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "backend_unavailable"
    assert "ConnectError" in result.message
    assert result.attempts == 3


async def test_a_silent_server_times_out(
    serve: Callable[[Handler], Awaitable[str]], load: Callable[..., Actions]
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)

    await serve(silent)
    text = SHOP_ACTIONS.replace("timeout_s: 1", "timeout_s: 0.2").replace("retries: 2", "retries: 0")

    result = await load(None, text).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "timeout"
    assert result.message == "shop did not answer in time"


async def test_a_dropped_connection_is_backend_unavailable(
    serve: Callable[[Handler], Awaitable[str]], load: Callable[..., Actions]
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)

    await serve(hang_up)
    text = SHOP_ACTIONS.replace("retries: 2", "retries: 0")

    result = await load(None, text).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "backend_unavailable"
    assert result.message.startswith("shop unreachable")


# ---- OpenAPI operations --------------------------------------------------------------------------------------

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "shop", "version": "1"},
    "paths": {
        "/v1/orders/{order_id}": {
            "get": {
                "operationId": "getOrder",
                "parameters": [
                    {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "expand", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                    "404": {"description": "no such order"},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Order": {
                "type": "object",
                "required": ["order_id", "status"],
                "properties": {"status": {"type": "string"}},
            }
        }
    },
}

OPENAPI_ACTIONS = """\
connectors:
  shop:
    type: http
    base_url: http://shop.test
    openapi: openapi.json
actions:
  get_order:
    connector: shop
    kind: read
    operation: getOrder
    params: [order_id, expand]
    required: [order_id]
    query: [expand]
"""


async def test_an_action_can_name_an_openapi_operation(tmp_path: Path, load: Callable[..., Actions]) -> None:
    write_file(tmp_path, json.dumps(OPENAPI), "openapi.json")
    backend = Backend()

    result = await load(backend, OPENAPI_ACTIONS).call("get_order", {"order_id": "LM26110625", "expand": "items"})

    assert result.ok
    request = backend.requests[0]
    assert request.method == "GET"
    assert request.url.path == "/v1/orders/LM26110625"
    assert request.url.params["expand"] == "items"


async def test_an_openapi_response_schema_with_refs_is_enforced(tmp_path: Path, load: Callable[..., Actions]) -> None:
    write_file(tmp_path, json.dumps(OPENAPI), "openapi.json")
    backend = Backend(default=httpx.Response(200, json={"order_id": "LM26110625", "status": 3}))

    result = await load(backend, OPENAPI_ACTIONS).call("get_order", {"order_id": "LM26110625"})

    assert result.error_code == "invalid_response"
    assert "status" in result.message


def test_an_unknown_operation_id_is_a_load_error(tmp_path: Path) -> None:
    write_file(tmp_path, json.dumps(OPENAPI), "openapi.json")
    path = write_file(tmp_path, OPENAPI_ACTIONS.replace("getOrder", "getOrders"))

    with pytest.raises(DataFileError) as caught:
        load_actions(path)

    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, "operation: getOrders")
    assert "operationId 'getOrders' (action 'get_order') is not in the OpenAPI document" in str(caught.value)


def test_a_missing_openapi_document_is_a_load_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, OPENAPI_ACTIONS)

    with pytest.raises(DataFileError) as caught:
        load_actions(path)

    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, "type: http")
    assert "openapi.json" in str(caught.value)


# ---- mistakes in actions.yaml name the file and the line -----------------------------------------------------

# case → (file text, where the error must point: (below this line, the line with this text), what it says)
BROKEN_FILES: dict[str, tuple[str, tuple[str | None, str], str]] = {
    "unknown connector": (
        SHOP_ACTIONS.replace("  search_products:\n    connector: shop", "  search_products:\n    connector: erp"),
        (None, "connector: erp"),
        "'erp', which is not defined",
    ),
    "unknown field": (
        SHOP_ACTIONS.replace("    query: [q]", "    query: [q]\n    retry: 3"),
        (None, "retry: 3"),
        "Extra inputs are not permitted",
    ),
    "write without method": (
        SHOP_ACTIONS.replace("    kind: write\n    method: POST\n", "    kind: write\n"),
        ("  create_return:", "connector: shop"),
        "needs method and path",
    ),
    "unknown kind": (
        SHOP_ACTIONS.replace("kind: write", "kind: delete"),
        (None, "kind: delete"),
        "kind",
    ),
    "identity param not a param": (
        SHOP_ACTIONS.replace("identity_params: [order_id]", "identity_params: [user_id]"),
        ("  get_order:", "connector: shop"),
        "['user_id'] are not in params",
    ),
    "action name": (
        SHOP_ACTIONS.replace("  search_products:", "  SearchProducts:"),
        ("  SearchProducts:", "connector: shop"),
        "snake_case",
    ),
    "operation without openapi": (
        SHOP_ACTIONS.replace("    method: GET\n    path: /products\n", "    operation: searchProducts\n"),
        (None, "operation: searchProducts"),
        "has no openapi",
    ),
    "http connector without url": (
        SHOP_ACTIONS.replace('    base_url: "${KEFU_TEST_SHOP_URL:-http://shop.test}"\n', ""),
        ("  shop:", "type: http"),
        "needs base_url",
    ),
    "invalid yaml": (
        SHOP_ACTIONS.replace("params: [q]", "params: [q"),
        (None, "query: [q]"),
        "invalid YAML",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_mistakes_in_actions_yaml_name_the_file_and_line(tmp_path: Path, case: str) -> None:
    text, (after, at), message = BROKEN_FILES[case]
    path = write_file(tmp_path, text)

    with pytest.raises(DataFileError) as caught:
        load_actions(path)

    assert caught.value.path == str(path)
    assert caught.value.line == line_of(path, at, after=after), str(caught.value)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{caught.value.line}: ")


def test_a_missing_actions_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="file not found") as caught:
        load_actions(tmp_path / "actions.yaml")
    assert caught.value.path == str(tmp_path / "actions.yaml")


# ---- Python connector ---------------------------------------------------------------------------------------

PYTHON_ACTIONS = """\
connectors:
  erp:
    type: python
actions:
  get_order:
    connector: erp
    kind: read
    function: tests.unit.test_connectors:erp_get_order
    params: [order_id, expand]
    required: [order_id]
  create_return:
    connector: erp
    kind: write
    function: tests.unit.test_connectors:erp_create_return
    params: [order_id, reason_code]
  crash:
    connector: erp
    kind: read
    function: tests.unit.test_connectors:erp_crash
    params: [order_id]
  odd:
    connector: erp
    kind: read
    function: tests.unit.test_connectors:erp_odd
  quiet:
    connector: erp
    kind: read
    function: tests.unit.test_connectors:erp_quiet
"""

ERP_CALLS: list[tuple[str, dict[str, Any]]] = []


def erp_get_order(order_id: str, expand: str | None = None) -> dict[str, Any]:
    ERP_CALLS.append(("get_order", {"order_id": order_id, "expand": expand}))
    if order_id == "LM00000000":
        raise ActionFailed("order_not_found", "没有这个订单")
    return {"order_id": order_id, "status": "delivered"}


async def erp_create_return(order_id: str, reason_code: str, idempotency_key: str | None) -> dict[str, Any]:
    ERP_CALLS.append(("create_return", {"order_id": order_id, "reason_code": reason_code, "key": idempotency_key}))
    if reason_code == "late":
        raise ActionFailed("outside_return_window")
    return {"id": "AS1", "status": "pending"}


def erp_crash(order_id: str) -> dict[str, Any]:
    raise ConnectionResetError("erp db 10.0.0.7 reset the connection")


def erp_odd() -> list[str]:
    return ["not", "a", "dict"]


def erp_quiet() -> None:
    return None


@pytest.fixture
def erp(tmp_path: Path) -> Actions:
    ERP_CALLS.clear()
    return load_actions(write_file(tmp_path, PYTHON_ACTIONS))


async def test_a_python_action_gets_its_arguments_as_keywords(erp: Actions) -> None:
    result = await erp.call("get_order", {"order_id": "LM26110625", "expand": "items", "user_id": "U9"})

    assert result.ok and result.data == {"order_id": "LM26110625", "status": "delivered"}
    assert ERP_CALLS == [("get_order", {"order_id": "LM26110625", "expand": "items"})]


async def test_an_async_python_write_gets_the_idempotency_key(erp: Actions) -> None:
    result = await erp.call(
        "create_return", {"order_id": "LM26110625", "reason_code": "no_reason"}, idempotency_key="k1"
    )

    assert result.ok and result.data["id"] == "AS1"
    assert ERP_CALLS == [("create_return", {"order_id": "LM26110625", "reason_code": "no_reason", "key": "k1"})]


async def test_action_failed_becomes_that_error(erp: Actions) -> None:
    not_found = await erp.call("get_order", {"order_id": "LM00000000"})
    late = await erp.call("create_return", {"order_id": "LM26110625", "reason_code": "late"}, idempotency_key="k2")

    assert (not_found.ok, not_found.error_code, not_found.message) == (False, "order_not_found", "没有这个订单")
    assert not not_found.unavailable
    assert (late.error_code, late.message) == ("outside_return_window", "outside_return_window")


async def test_an_unexpected_exception_becomes_a_backend_error(erp: Actions, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="kefu.connectors.python"):
        result = await erp.call("crash", {"order_id": "LM26110625"})

    assert not result.ok
    assert result.error_code == "backend_error"
    assert result.unavailable  # a flow hands the customer to a person instead of guessing
    assert "ConnectionResetError" in result.message
    assert "crash" in caplog.text  # logged with its traceback for the operator


async def test_a_python_action_must_answer_with_a_dict(erp: Actions) -> None:
    odd = await erp.call("odd", {})
    quiet = await erp.call("quiet", {})

    assert odd.error_code == "invalid_response"
    assert quiet.ok and quiet.data == {}


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("tests.unit.test_connectors:no_such_function", "no callable 'no_such_function'"),
        ("tests.unit.no_such_module:erp_get_order", "cannot import 'tests.unit.no_such_module'"),
        ("tests.unit.test_connectors.erp_get_order", "is not of the form package.module:function"),
    ],
)
def test_a_python_action_that_cannot_be_resolved_is_a_load_error(tmp_path: Path, function: str, message: str) -> None:
    path = write_file(tmp_path, PYTHON_ACTIONS.replace("tests.unit.test_connectors:erp_crash", function))

    with pytest.raises(DataFileError) as caught:
        load_actions(path)

    assert caught.value.path == str(path)
    assert message in str(caught.value)
    assert caught.value.line == line_of(path, function)


def test_a_python_action_without_function_is_a_load_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, PYTHON_ACTIONS.replace("    function: tests.unit.test_connectors:erp_odd\n", ""))

    with pytest.raises(DataFileError, match="needs function") as caught:
        load_actions(path)

    assert caught.value.line == line_of(path, "connector: erp", after="  odd:")
