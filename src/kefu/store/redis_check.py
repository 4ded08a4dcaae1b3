"""One question asked of the configured Redis: does it answer? (readiness probe and `kefu doctor`)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from kefu.config import mask_url


async def ping_redis(url: str, *, timeout_s: float = 2.0) -> str | None:
    """None when Redis at `url` answers PING within `timeout_s`, else why not (the URL's password masked)."""
    client: Redis = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"Redis at {mask_url(url)} does not answer: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None
