"""A lean HTTP/1.1 load generator: keep-alive connections over asyncio streams, one per concurrent caller.

On a 2-core machine the load generator competes with the servers it measures, so it does as little
as possible per request: pre-encoded requests, no header objects, Content-Length or chunked bodies
read straight off the stream. It runs on uvloop when available.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench.harness import percentile

T = TypeVar("T")


IDLE_REUSE_S = 4.0
"""A connection idle longer than this is replaced, not reused: servers close idle keep-alive connections (uvicorn
after 5 s), and a request sent as the server closes gets no answer at all. HTTP clients expire them the same way."""


class HTTPConnection:
    """One keep-alive connection to a loopback server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._writer is not None and time.monotonic() - self._last_used > IDLE_REUSE_S:
            await self.close()
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        reader, writer = await self._connect()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        try:
            return await self._read_response(reader)
        except BaseException:
            await self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked, keep_alive = False, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        elif length >= 0:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            keep_alive = False
        if not keep_alive:
            await self.close()
        self._last_used = time.monotonic()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


@dataclass(slots=True)
class LoadResult:
    """Latencies (seconds, sorted) of the successful requests of one load run, and its failures."""

    concurrency: int
    latencies: list[float]
    errors: int
    wall_s: float
    error_samples: list[str] = field(default_factory=list)
    by_id: dict[str, float] = field(default_factory=dict)
    """Latency (seconds) of each successful request sent with an `X-Request-ID` (`run_load(request_id=...)`)."""

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "concurrency": self.concurrency,
            "requests_ok": self.ok,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "wall_s": round(self.wall_s, 3),
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.ms(50), 3),
            "p90_ms": round(self.ms(90), 3),
            "p99_ms": round(self.ms(99), 3),
            "max_ms": round(lat[-1] * 1000, 3) if lat else None,
            "mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
        }


Check = Callable[[int, int, bytes], str | None]
"""Looks at (request number, status, body) of a response; returns a problem, or None when it is right."""

MakeRequest = Callable[[int], tuple[str, bytes]]
"""Request number → (path, JSON body) of a POST."""


async def run_load(
    base_url: str,
    make_request: MakeRequest,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    check: Check,
    request_id: Callable[[int], str] | None = None,
) -> LoadResult:
    """Send up to `requests` POSTs from `concurrency` callers, each waiting for its reply before the next.

    Stops early, after the requests already in flight, once `max_seconds` have passed. `request_id`: the
    `X-Request-ID` to send with each request (by request number); their latencies are kept by id too.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    latencies: list[float] = []
    errors: list[str] = []
    by_id: dict[str, float] = {}
    next_index = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def caller() -> None:
        nonlocal next_index
        conn = HTTPConnection(host, port)
        try:
            while next_index < requests and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                path, body = make_request(index)
                ident = request_id(index) if request_id is not None else None
                headers = {"X-Request-ID": ident} if ident is not None else None
                sent = time.perf_counter()
                try:
                    status, payload = await conn.request("POST", path, body, headers)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - sent
                problem = check(index, status, payload)
                if problem is None:
                    latencies.append(elapsed)
                    if ident is not None:
                        by_id[ident] = elapsed
                else:
                    errors.append(problem)
        finally:
            await conn.close()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        concurrency=concurrency,
        latencies=latencies,
        errors=len(errors),
        wall_s=wall,
        error_samples=sorted(set(errors))[:5],
        by_id=by_id,
    )


def run_event_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on uvloop when it is installed (cheaper per request), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
