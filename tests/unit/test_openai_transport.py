"""The OpenAI-compatible backend as the app builds it (httpx over aiohttp), against real sockets on loopback:
what each way of failing becomes, and a plain answer and stream going through."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from kefu.api.app import create_app
from kefu.config import LLMBackendSettings
from kefu.errors import LLMTimeoutError, LLMUnavailableError
from kefu.llm.openai import OpenAICompatibleLLM
from kefu.llm.resilience import RetryPolicy
from kefu.llm.types import GenerationOptions, Message, StreamDone, TextDelta
from tests.conftest import make_settings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HELLO = [Message("user", "你好")]
NO_RETRIES = RetryPolicy(max_retries=0)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def _http(status: str, content_type: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _backend(base_url: str, **settings: object) -> OpenAICompatibleLLM:
    config = LLMBackendSettings(backend="openai", base_url=base_url, model="stub", **settings)  # type: ignore[arg-type]
    return OpenAICompatibleLLM.from_settings(config, retry_policy=NO_RETRIES)


async def test_an_answer_and_a_stream_come_through(serve: Callable[[Handler], Awaitable[str]]) -> None:
    bodies: list[dict[str, object]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # one keep-alive connection serves both calls
            try:
                body = json.loads(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            bodies.append(body)
            if body.get("stream"):
                events = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in "您好"]
                events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                writer.write(_http("200 OK", "text/event-stream", sse.encode()))
            else:
                answer = {"model": "stub", "choices": [{"message": {"role": "assistant", "content": "您好"}}]}
                writer.write(_http("200 OK", "application/json", json.dumps(answer).encode()))
            await writer.drain()
        writer.close()

    llm = _backend(await serve(handler))
    try:
        completion = await llm.complete(HELLO, GenerationOptions())
        events = [event async for event in llm.stream(HELLO, GenerationOptions())]
    finally:
        await llm.aclose()
    assert completion.text == "您好"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["您", "好"]
    assert isinstance(events[-1], StreamDone) and events[-1].completion.text == "您好"
    assert [b["messages"] for b in bodies] == [[{"role": "user", "content": "你好"}]] * 2


async def test_nothing_listening_is_reported_as_cannot_connect(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    base_url = await serve(handler)
    dead = base_url.replace(base_url.split(":")[2].split("/")[0], "9")  # port 9 (discard): nothing listens
    llm = _backend(dead)
    try:
        with pytest.raises(
            LLMUnavailableError, match=re.escape("cannot connect to LLM endpoint http://127.0.0.1:9/v1")
        ):
            await llm.complete(HELLO, GenerationOptions())
    finally:
        await llm.aclose()


async def test_a_silent_endpoint_times_out(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()  # never answers: waits until the client gives up and hangs up
        writer.close()

    llm = _backend(await serve(handler), timeout_s=0.3)
    try:
        with pytest.raises(LLMTimeoutError, match=re.escape("sent nothing for 0.3s")):
            await llm.complete(HELLO, GenerationOptions())
    finally:
        await llm.aclose()


async def test_a_dropped_connection_is_reported_as_lost(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()  # hangs up without a word

    llm = _backend(await serve(handler))
    try:
        with pytest.raises(LLMUnavailableError, match=r"lost the connection to LLM endpoint \S+ before answering"):
            await llm.complete(HELLO, GenerationOptions())
    finally:
        await llm.aclose()


async def test_a_stream_cut_after_its_first_token_is_lost_mid_stream(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        first = json.dumps({"choices": [{"index": 0, "delta": {"content": "您"}, "finish_reason": None}]})
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(f'data: {first}' + chr(10) * 2):x}\r\ndata: {first}\n\n\r\n".encode()
        )
        await writer.drain()
        writer.transport.abort()  # the server dies mid-stream

    llm = _backend(await serve(handler))
    received: list[str] = []
    try:
        with pytest.raises(LLMUnavailableError, match="mid-stream"):
            async for event in llm.stream(HELLO, GenerationOptions()):
                if isinstance(event, TextDelta):
                    received.append(event.text)
    finally:
        await llm.aclose()
    assert received == ["您"]


async def test_the_kefu_request_id_goes_to_the_llm_backend_with_each_call(
    serve: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    """An operator finds the LLM server's log lines of a slow turn by the id kefu logged (and the other way round)."""
    seen: list[str | None] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                break
            found = re.search(rb"(?i)\r\nx-request-id: *([^\r]+)", head)
            seen.append(found.group(1).decode() if found else None)
            answer = {"model": "stub", "choices": [{"message": {"role": "assistant", "content": "您好"}}]}
            writer.write(_http("200 OK", "application/json", json.dumps(answer).encode()))
            await writer.drain()
        writer.close()

    base_url = await serve(handler)
    llm = _backend(base_url)
    try:
        await llm.complete(HELLO, GenerationOptions())  # outside any request: no id
    finally:
        await llm.aclose()

    settings = make_settings(
        tmp_path, llm={"backend": "openai", "base_url": base_url, "model": "stub", "max_retries": 0}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kefu.test") as client:
            sent = {"user_id": "u1", "channel": "web", "text": "What is your return policy?"}
            reply = await client.post("/v1/chat", json=sent, headers={"X-Request-ID": "lb-7f3a.2"})
            assert reply.status_code == 200 and reply.json()["reply"] == "您好"
            assert reply.headers["X-Request-ID"] == "lb-7f3a.2"
            unnamed = await client.post("/v1/chat", json=sent)
            assert unnamed.status_code == 200
    assert seen == [None, "lb-7f3a.2", unnamed.headers["X-Request-ID"]]
