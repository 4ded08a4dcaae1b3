"""A slow OpenAI-compatible endpoint on 127.0.0.1 that reports when a client hangs up on a streamed reply.

It runs on its own event loop in a background thread and speaks just enough HTTP/1.1: `POST /v1/chat/completions`
answers with Server-Sent Events, one delta every `interval_s`, `chunks` of them, then `[DONE]`. While it streams it
also reads the socket, so a client that closes the connection mid-reply is seen at once (`Stream.hung_up`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Stream:
    """One streamed request as the server saw it."""

    body: dict[str, Any]
    started: threading.Event = field(default_factory=threading.Event)
    hung_up: threading.Event = field(default_factory=threading.Event)
    """The client closed the connection before the reply was complete."""
    finished: threading.Event = field(default_factory=threading.Event)
    """The whole reply, `[DONE]` included, was sent."""
    chunks_sent: int = 0


class StreamingLLMServer:
    """Serves on a free port until `stop()`; `streams` lists every chat request in arrival order."""

    def __init__(self, *, interval_s: float = 0.05, chunks: int = 400, text: str = "好的，") -> None:
        self.interval_s = interval_s
        self.chunks = chunks
        self.text = text
        self.streams: list[Stream] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="streaming-llm", daemon=True)
        self.base_url = ""

    def start(self) -> str:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if not request_line.startswith("POST ") or "/chat/completions" not in request_line:
            payload = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
            writer.write(f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
            return True
        stream = Stream(json.loads(body))
        self.streams.append(stream)
        if not stream.body.get("stream"):
            return await self._whole(stream, writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
        await writer.drain()
        stream.started.set()
        hang_up = asyncio.ensure_future(reader.read(1))  # b"" (EOF) once the client closes the connection
        try:
            for _ in range(self.chunks):
                done, _ = await asyncio.wait({hang_up}, timeout=self.interval_s)
                if done:
                    stream.hung_up.set()
                    return False
                chunk = {"model": "stub", "choices": [{"index": 0, "delta": {"content": self.text}}]}
                writer.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                await writer.drain()
                stream.chunks_sent += 1
            last = {
                "model": "stub",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": self.chunks},
            }
            writer.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
            await writer.drain()
            stream.finished.set()
        except ConnectionError:
            stream.hung_up.set()
        finally:
            hang_up.cancel()
        return False  # the body had no length: the connection ends with it

    async def _whole(self, stream: Stream, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(self.interval_s)
        answer = {
            "model": "stub",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1},
        }
        payload = json.dumps(answer, ensure_ascii=False).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        writer.write(f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()
        stream.finished.set()
        return True


@contextmanager
def streaming_llm_server(**options: Any) -> Iterator[StreamingLLMServer]:
    server = StreamingLLMServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
