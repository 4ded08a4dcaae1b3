"""Request budgets per IP, API key, customer and WebSocket: in process, or shared through Redis."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from kefu.config import RateLimitSettings
from kefu.errors import ConfigError, UserError


class RateLimitedError(UserError):
    """Too many requests; `retry_after_s` says when the budget has room again."""

    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SweptMemoryStorage(MemoryStorage):
    """`limits`' in-process storage, with its sweep of expired keys started at most once a second.

    The library starts a sweep over every key after each hit, as soon as the last sweep is done. With one key per
    customer that sweep runs back to back on the event loop under load (measured: about a tenth of the loop's busy
    time at 90 turns/s). A counter past its window is dropped when it is next read whatever the sweep does, so
    sweeping less often only keeps an expired key in memory up to a second longer.
    """

    SWEEP_INTERVAL_S = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        self._next_sweep = 0.0
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    async def _MemoryStorage__schedule_expiry(self) -> None:  # the library's (name-mangled) private hook
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.SWEEP_INTERVAL_S
        await super()._MemoryStorage__schedule_expiry()  # type: ignore[misc]


class RateLimiter:
    """Sliding-window-counter limits (the `limits` library); one limiter per app, storage chosen by configuration.

    The counter strategy keeps two counters per key (this window and the last, weighted by overlap) instead of
    one timestamp per request as the moving window does: a busy key costs the same as a quiet one, in memory
    and in Redis, and nothing scans long lists of timestamps under load.
    """

    def __init__(self, settings: RateLimitSettings, redis_url: str | None = None) -> None:
        self.enabled = settings.enabled
        storage: Storage
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
            storage = RedisStorage(uri, implementation="redispy", key_prefix="kefu-limits")
        else:
            storage = SweptMemoryStorage()
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        try:
            self.limits: dict[str, RateLimitItem] = {
                "ip": parse(settings.per_ip),
                "key": parse(settings.per_api_key),
                "customer": parse(settings.per_customer),
                "ws": parse(settings.ws_messages),
            }
        except ValueError as exc:
            raise ConfigError(f"KEFU_RATE_LIMIT__*: {exc} (use the form '30/minute')") from None

    async def hit(self, scope: str, identity: str) -> None:
        """Count one request against `scope`'s budget for `identity`; raises RateLimitedError when over."""
        if not self.enabled:
            return
        item = self.limits[scope]
        if await self._limiter.hit(item, scope, identity):
            return
        stats = await self._limiter.get_window_stats(item, scope, identity)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError(f"too many requests ({item}); retry in {retry} s", retry)

    async def aclose(self) -> None:
        """Stop the in-memory expiry task and close Redis connections (neither may outlive the event loop)."""
        timer = getattr(self.storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()
        # The Redis client's connection pool belongs to this app's event loop: close it with the app.
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
