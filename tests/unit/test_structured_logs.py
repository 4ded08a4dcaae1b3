"""Log lines as an operator's log shipper receives them: JSON, with request and session ids, no customer text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kefu.api.app import create_app
from kefu.llm.testing import ScriptedLLM
from kefu.observability.logging import (
    JsonFormatter,
    LogContext,
    QueryStringFilter,
    TextFormatter,
    logging_config,
    private,
)
from tests.conftest import make_settings

CUSTOMER_TEXT = "我的手机号是多少来着 ZEBRA-7731"
SECRET_IN_ERROR = "customer wrote ZEBRA-7731"


class Captured:
    """A handler on the root logger, formatted as `kefu serve` formats (JSON or text)."""

    def __init__(self, formatter: logging.Formatter, include_text: bool) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(LogContext(include_text=include_text))

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


@pytest.fixture
def capture() -> Iterator[Any]:
    handlers: list[logging.Handler] = []

    def attach(formatter: logging.Formatter, *, include_text: bool = False) -> Captured:
        captured = Captured(formatter, include_text)
        logging.getLogger().addHandler(captured.handler)
        handlers.append(captured.handler)
        return captured

    yield attach
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


async def _failing_turn(tmp_path: Path, include_text: bool = False) -> tuple[httpx.Response, str]:
    """A turn whose model call fails in an unexpected way, with an exception message quoting the customer."""
    llm = ScriptedLLM()
    llm.queue(ValueError(SECRET_IN_ERROR))
    app = create_app(make_settings(tmp_path, log_customer_text=include_text), llm=llm)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            resp = await client.post("/v1/chat", json={"user_id": "log-1", "text": CUSTOMER_TEXT})
    assert resp.json()["error"] == "internal_error"
    return resp, resp.headers["x-request-id"]


async def test_json_lines_carry_request_and_session_ids_and_no_customer_text(tmp_path: Path, capture: Any) -> None:
    logs = capture(JsonFormatter(include_text=False))
    resp, request_id = await _failing_turn(tmp_path)
    lines = logs.json_lines()
    failure = next(line for line in lines if line["message"].startswith("turn failed in an unexpected way"))
    assert failure["level"] == "ERROR" and failure["logger"] == "kefu.pipeline.runner"
    assert failure["request_id"] == request_id and failure["session_id"] == resp.json()["session_id"]
    # The stack is there for the developer, the message that quoted the customer is not.
    assert "ValueError: [message hidden" in failure["exception"] and "kefu/llm/testing.py" in failure["exception"]
    during_request = [line for line in lines if line.get("request_id") == request_id]
    assert len(during_request) >= 2 and all(line["session_id"] == resp.json()["session_id"] for line in during_request)
    assert "ZEBRA-7731" not in logs.text


async def test_customer_text_is_logged_only_when_configured(tmp_path: Path, capture: Any) -> None:
    logs = capture(TextFormatter(include_text=True), include_text=True)
    _, request_id = await _failing_turn(tmp_path, include_text=True)
    assert f"ValueError: {SECRET_IN_ERROR}" in logs.text
    assert f"request_id={request_id}" in logs.text


def test_private_values_are_hidden_unless_allowed(capture: Any) -> None:
    hidden = capture(JsonFormatter())
    shown = capture(TextFormatter(include_text=True), include_text=True)
    logging.getLogger("kefu.test").warning("backend said: %s", private("订单 LM123 的收件人是张三"))
    assert hidden.json_lines()[-1]["message"] == "backend said: [16 chars hidden]"
    assert "backend said: 订单 LM123 的收件人是张三" in shown.text
    assert "request_id" not in hidden.json_lines()[-1]  # outside a request there is none


def test_uvicorn_request_lines_lose_their_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.1:5123", "GET", "/v1/ws?user_id=alice&token=eyJhbGciOi", "1.1", 101), None,
    )  # fmt: skip
    assert QueryStringFilter().filter(record)
    assert record.getMessage() == '10.0.0.1:5123 - "GET /v1/ws?… HTTP/1.1" 101'


def test_the_serve_logging_config_routes_uvicorn_through_kefus_formatter(tmp_path: Path) -> None:
    config = logging_config(make_settings(tmp_path, log_format="json", log_level="WARNING"))
    assert config["formatters"]["kefu"]["()"].endswith("JsonFormatter")
    assert config["root"] == {"level": "WARNING", "handlers": ["stderr"]}
    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": True, "filters": ["query_strings"]}
    text = logging_config(make_settings(tmp_path, log_customer_text=True))
    assert text["formatters"]["kefu"] == {"()": "kefu.observability.logging.TextFormatter", "include_text": True}
    assert text["filters"]["context"]["include_text"] is True
