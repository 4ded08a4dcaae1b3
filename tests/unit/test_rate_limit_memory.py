"""The in-process rate-limit storage: limits hold, expired counters go, and the sweep of keys stays bounded."""

from __future__ import annotations

import asyncio

import pytest

from kefu.auth.ratelimit import RateLimitedError, RateLimiter, SweptMemoryStorage
from kefu.config import RateLimitSettings


async def test_each_customer_gets_their_own_budget_and_the_excess_is_refused() -> None:
    limiter = RateLimiter(RateLimitSettings(enabled=True, per_customer="3/minute"))
    assert isinstance(limiter.storage, SweptMemoryStorage)
    for _ in range(3):
        await limiter.hit("customer", "alice")
    with pytest.raises(RateLimitedError, match=r"retry in \d+ s"):
        await limiter.hit("customer", "alice")
    await limiter.hit("customer", "bob")
    await limiter.aclose()


async def test_many_customers_start_one_sweep_a_second_and_expired_keys_still_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = RateLimiter(RateLimitSettings(enabled=True, per_customer="5/second"))
    storage = limiter.storage
    assert isinstance(storage, SweptMemoryStorage)
    sweeps = 0
    real_sweep = storage._MemoryStorage__expire_events  # type: ignore[attr-defined]

    async def counted() -> None:
        nonlocal sweeps
        sweeps += 1
        await real_sweep()

    monkeypatch.setattr(storage, "_MemoryStorage__expire_events", counted)
    for customer in range(500):
        await limiter.hit("customer", f"customer-{customer}")
        await asyncio.sleep(0)  # the event loop runs other work between requests (and any sweep started)
    # The library alone would start a sweep over every key after nearly every hit.
    assert sweeps <= 2
    assert any("customer-499" in key for key in storage.expirations)
    # A second later the next hit starts a sweep, and the counters of the one-second windows are gone.
    await asyncio.sleep(SweptMemoryStorage.SWEEP_INTERVAL_S + 1.1)
    await limiter.hit("customer", "late")
    if storage.timer is not None:
        await asyncio.wait_for(storage.timer, timeout=30)
    assert not any("customer-499" in key for key in storage.expirations)
    await limiter.aclose()
