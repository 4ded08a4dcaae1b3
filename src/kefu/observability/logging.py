"""Log lines as JSON or text, each naming the request and session it belongs to; customer text kept out.

Customer text is personal data. kefu's own log calls pass anything that may carry it (backend and model
messages) wrapped in `private()`, which prints as its length unless `KEFU_LOG_CUSTOMER_TEXT=true`; and an
exception logged while a request is being handled is written without its message (which may quote the
customer), only its type and stack, unless the same setting is on.
"""

from __future__ import annotations

import json
import logging
import logging.config
import traceback
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from kefu.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
"""Carries a request's id in and out of kefu's HTTP API, and on to the LLM backend's requests made for it."""
REQUEST_ID: ContextVar[str | None] = ContextVar("kefu_request_id", default=None)
SESSION_ID: ContextVar[str | None] = ContextVar("kefu_session_id", default=None)
_HIDDEN = "[message hidden: it may quote customer text; KEFU_LOG_CUSTOMER_TEXT=true shows it]"


class Private:
    """A log argument that may be personal data: written as its length unless customer text is allowed in logs."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return f"[{len(str(self.value))} chars hidden]"

    __repr__ = __str__


def private(value: object) -> Private:
    return Private(value)


def with_request_id(headers: dict[str, str]) -> dict[str, str]:
    """`headers` for a call to a model server, plus the id of the kefu request the call serves when there is one:
    the server's (or gateway's) log lines of the call can then be found from kefu's, and the other way round."""
    request_id = REQUEST_ID.get()
    return {**headers, REQUEST_ID_HEADER: request_id} if request_id else headers


def bind_request(request_id: str) -> tuple[Token[str | None], Token[str | None]]:
    """Start a request's log context (its id, no session yet); `unbind_request` ends it."""
    return REQUEST_ID.set(request_id), SESSION_ID.set(None)


def unbind_request(tokens: tuple[Token[str | None], Token[str | None]]) -> None:
    REQUEST_ID.reset(tokens[0])
    SESSION_ID.reset(tokens[1])


def bind_session(session_id: str) -> None:
    """From here on, this request's (or turn's) log lines name the session."""
    SESSION_ID.set(session_id)


class LogContext(logging.Filter):
    """Adds request_id and session_id to every record; reveals `private()` values only when allowed."""

    def __init__(self, include_text: bool = False) -> None:
        super().__init__()
        self.include_text = include_text

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.session_id = SESSION_ID.get()
        if self.include_text and record.args:
            if isinstance(record.args, dict):
                record.args = {k: _reveal(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_reveal(a) for a in record.args)
        return True


def _reveal(value: object) -> object:
    return value.value if isinstance(value, Private) else value


class QueryStringFilter(logging.Filter):
    """Drops query strings from uvicorn's request lines: `?token=` and `?user_id=` are credentials and personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(
                a.split("?", 1)[0] + "?…" if isinstance(a, str) and a.startswith("/") and "?" in a else a
                for a in record.args
            )
        return True


def _exception_text(error: BaseException, hide_message: bool) -> str:
    if not hide_message:
        return "".join(traceback.format_exception(error)).rstrip()
    parts: list[str] = []
    exc: BaseException | None = error
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = "".join(traceback.format_tb(exc.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(exc).__qualname__}: {_HIDDEN}")
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n\nwhich was raised while handling:\n\n".join(parts)


class _KefuFormatter(logging.Formatter):
    def __init__(self, include_text: bool = False) -> None:
        super().__init__()
        self.include_text = include_text

    def _ids(self, record: logging.LogRecord) -> tuple[str | None, str | None]:
        # Records that skipped the LogContext filter (another handler's) still get the ids of their context.
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        session_id = getattr(record, "session_id", None) or SESSION_ID.get()
        return request_id, session_id

    def _exception(self, record: logging.LogRecord, request_id: str | None) -> str | None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return None
        return _exception_text(exc, hide_message=request_id is not None and not self.include_text)


class JsonFormatter(_KefuFormatter):
    """One JSON object per line: time, level, logger, message, pid, request_id, session_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        request_id, session_id = self._ids(record)
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker of `kefu serve --workers N` wrote the line
        }
        if request_id:
            data["request_id"] = request_id
        if session_id:
            data["session_id"] = session_id
        exception = self._exception(record, request_id)
        if exception:
            data["exception"] = exception
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(_KefuFormatter):
    """`time LEVEL logger: message [request_id=… session_id=…]`, then the exception, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        request_id, session_id = self._ids(record)
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        ids = " ".join(f"{k}={v}" for k, v in (("request_id", request_id), ("session_id", session_id)) if v)
        if ids:
            line += f" [{ids}]"
        exception = self._exception(record, request_id)
        if exception:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for kefu and uvicorn (also given to uvicorn, which applies it in each worker)."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    include_text = settings.log_customer_text
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": f"{__name__}.LogContext", "include_text": include_text},
            "query_strings": {"()": f"{__name__}.QueryStringFilter"},
        },
        "formatters": {"kefu": {"()": f"{__name__}.{formatter.__name__}", "include_text": include_text}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "kefu",
                "filters": ["context"],
            }
        },
        "loggers": {
            # uvicorn's loggers write through kefu's handler, so its lines are JSON too and carry the request id.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True, "filters": ["query_strings"]},
            "uvicorn.access": {"handlers": [], "propagate": True, "filters": ["query_strings"]},
        },
        "root": {"level": settings.log_level, "handlers": ["stderr"]},
    }


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Apply the logging settings to this process; returns the config for uvicorn to apply in its workers."""
    config = logging_config(settings)
    logging.config.dictConfig(config)
    return config
