"""kefu's outgoing HTTP calls that a turn waits for: the LLM server and the shop's backend.

Requests are `httpx.Request`s sent straight to an `httpx` transport over aiohttp, without an `httpx.AsyncClient`:

- httpx's own connection pool (pure-Python HTTP/1.1 over anyio) cost about 2 ms of CPU per request here at 64
  requests in flight, most of it checking every pooled connection on each request; aiohttp's pool and C parser
  take 0.7 ms for the same call;
- the client's layers (cookie jar, auth and redirect handling, URL and header merging) cost about a quarter of a
  millisecond more per call and do nothing for a JSON API.

Tests pass an `httpx.MockTransport` instead (the same handlers as a client would take).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

import kefu

USER_AGENT = f"kefu/{kefu.__version__}"


def aiohttp_transport(base_url: str) -> AiohttpTransport:
    """httpx's transport interface over aiohttp's connection pool, for requests to `base_url`.

    The pool has no connection limit of its own: callers bound what is in flight (an LLM backend's
    `max_concurrency` queue, the turns themselves). A proxy from the environment (HTTPS_PROXY / HTTP_PROXY,
    NO_PROXY), as httpx would use, is looked up once here: aiohttp's `trust_env` would look it up, and read
    ~/.netrc in a thread, on every request.
    """
    return AiohttpTransport(
        proxy=_env_proxy(base_url),
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False),
    )


def json_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def send(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """Send `request` and read the whole response (closed when this returns)."""
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


def what_failed(exc: httpx.HTTPError) -> httpx.HTTPError:
    """The httpx error that says what happened. The aiohttp transport reports every lost or refused connection as
    `ConnectTimeout`; the aiohttp error it wraps tells which it was."""
    cause = exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        return exc
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(cause, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    return httpx.RemoteProtocolError(message)


def _env_proxy(base_url: str) -> httpx.Proxy | None:
    url = httpx.URL(base_url)
    if not url.host or proxy_bypass(url.host):
        return None
    proxy = getproxies().get(url.scheme)
    return httpx.Proxy(proxy) if proxy else None
