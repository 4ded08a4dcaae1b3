"""How a load-test customer talks to kefu: `POST /v1/chat`, `POST /v1/chat/stream` (SSE) or the widget's WebSocket.

Each transport answers `say(text)` with the finished reply, so the load test times every turn the same way:
from the moment the message is sent to the moment the whole reply is in. The WebSocket customer connects as
the web widget does (a customer token from `POST /v1/widget/session`, offered as a subprotocol) before its
first message; that handshake is timed apart (`connect_s`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.loadgen import HTTPConnection

TRANSPORTS = ("http", "sse", "ws")


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished turn as the customer saw it; `error` says why it is not a proper reply."""

    error: str | None = None
    message_id: str | None = None
    session_id: str | None = None
    text: str = ""
    handoff: bool = False


class Customer(Protocol):
    transport: str
    connect_s: float | None
    """How long the WebSocket handshake took (token, upgrade, session frame); None for plain HTTP."""

    async def say(self, text: str) -> Reply: ...

    async def close(self) -> None: ...


def _reply_from(payload: dict[str, Any]) -> Reply:
    """A ChatResponse body; a reply carrying an error code is kefu's fallback apology, counted as an error."""
    error = payload.get("error")
    if not payload.get("reply") and not payload.get("silent"):
        error = error or "empty reply"
    return Reply(
        error=f"fallback reply ({error})" if error else None,
        message_id=payload.get("message_id"),
        session_id=payload.get("session_id"),
        text=str(payload.get("reply") or ""),
        handoff=bool(payload.get("handoff")),
    )


def _http_error(status: int, body: bytes) -> Reply:
    return Reply(error=f"HTTP {status}: {body[:160].decode(errors='replace')}")


class HttpCustomer:
    """One conversation over `POST /v1/chat` on the caller's keep-alive connection."""

    transport = "http"
    connect_s: float | None = None
    path = "/v1/chat"

    def __init__(self, conn: HTTPConnection, user_id: str) -> None:
        self.conn = conn
        self.user_id = user_id
        self.session_id: str | None = None

    def _body(self, text: str) -> bytes:
        body: dict[str, Any] = {"user_id": self.user_id, "channel": "web", "text": text}
        if self.session_id:
            body["session_id"] = self.session_id
        return json.dumps(body, ensure_ascii=False).encode()

    async def say(self, text: str) -> Reply:
        status, payload = await self.conn.request("POST", self.path, self._body(text))
        if status != 200:
            return _http_error(status, payload)
        reply = _reply_from(json.loads(payload))
        self.session_id = reply.session_id or self.session_id
        return reply

    async def close(self) -> None:
        return None  # the connection is the caller's, kept for its next conversation


class SseCustomer(HttpCustomer):
    """One conversation over `POST /v1/chat/stream`: the turn ends with the `done` (or `error`) event."""

    transport = "sse"
    path = "/v1/chat/stream"

    async def say(self, text: str) -> Reply:
        status, payload = await self.conn.request("POST", self.path, self._body(text))
        if status != 200:
            return _http_error(status, payload)
        event = ""
        for line in payload.decode().splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "done":
                reply = _reply_from(json.loads(line[5:]))
                self.session_id = reply.session_id or self.session_id
                return reply
            elif line.startswith("data:") and event == "error":
                return Reply(error=f"SSE error event: {line[5:].strip()[:160]}")
        return Reply(error="SSE stream ended without a done event")


class WsCustomer:
    """One conversation over `/v1/ws`, as the web widget holds it: one socket for the whole conversation."""

    transport = "ws"

    def __init__(self, conn: HTTPConnection, ws_base: str, *, timeout_s: float) -> None:
        self.conn = conn
        self.ws_base = ws_base
        self.timeout_s = timeout_s
        self.connect_s: float | None = None
        self._socket: ClientConnection | None = None
        self._sent = 0

    async def _connect(self) -> ClientConnection:
        started = time.perf_counter()
        status, payload = await self.conn.request("POST", "/v1/widget/session", b'{"channel": "web"}')
        if status != 200:
            raise ConnectionError(f"POST /v1/widget/session: HTTP {status}: {payload[:160].decode(errors='replace')}")
        grant = json.loads(payload)
        query = urlencode({"user_id": grant["user_id"], "session_id": grant["session_id"]})
        socket = await connect(
            f"{self.ws_base}/v1/ws?{query}",
            subprotocols=[Subprotocol("kefu.v1"), Subprotocol(f"kefu.token.{grant['token']}")],
            compression=None,
            ping_interval=None,
            open_timeout=self.timeout_s,
            max_size=2**20,
        )
        first = json.loads(await socket.recv())
        if first.get("type") != "session":
            await socket.close()
            raise ConnectionError(f"expected a session frame first, got {str(first)[:160]}")
        self.connect_s = time.perf_counter() - started
        return socket

    async def say(self, text: str) -> Reply:
        if self._socket is None:
            try:
                self._socket = await self._connect()
            except (OSError, ValueError, KeyError, ConnectionError) as exc:
                return Reply(error=f"WebSocket connect: {type(exc).__name__}: {exc}")
        self._sent += 1
        client_id = f"m{self._sent}"
        await self._socket.send(json.dumps({"type": "message", "text": text, "client_message_id": client_id}))
        while True:
            event = json.loads(await self._socket.recv())
            kind = event.get("type")
            if kind == "reply" and event.get("client_message_id") == client_id:
                return _reply_from(event)
            if kind == "error":
                return Reply(error=f"WebSocket error frame: {json.dumps(event.get('error'))[:160]}")
            # ack, typing, delta and pushed status events come before the reply

    async def close(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close()


def make_customer(transport: str, conn: HTTPConnection, user_id: str, ws_base: str, timeout_s: float) -> Customer:
    if transport == "http":
        return HttpCustomer(conn, user_id)
    if transport == "sse":
        return SseCustomer(conn, user_id)
    if transport == "ws":
        return WsCustomer(conn, ws_base, timeout_s=timeout_s)
    raise ValueError(f"unknown transport {transport!r}; known: {', '.join(TRANSPORTS)}")
