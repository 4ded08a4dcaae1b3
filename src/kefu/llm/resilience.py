"""Keeping a flaky LLM endpoint from taking kefu down: retries with backoff, and a circuit breaker.

Retries absorb short blips (a restarting vLLM replica, a rate limit); the breaker stops every turn
from waiting on a backend that is plainly down, so the pipeline can hand off to a human at once.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from kefu.errors import (
    CircuitOpenError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_RETRYABLE_4XX = frozenset({408, 429})


def is_retryable(exc: BaseException) -> bool:
    """True for failures that may pass on a second try: no connection, timeouts, 408/429/5xx."""
    if isinstance(exc, LLMUnavailableError | LLMTimeoutError):
        return True
    return isinstance(exc, LLMHTTPError) and (exc.status_code in _RETRYABLE_4XX or exc.status_code >= 500)


def is_backend_failure(exc: BaseException) -> bool:
    """True when the backend is unhealthy; a 4xx other than 408/429 means it is up and judged the request."""
    return is_retryable(exc) or isinstance(exc, LLMResponseError)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times, and after what pause, a retryable failure is tried again."""

    max_retries: int = 2
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    """Cap on any single pause, Retry-After included: a customer is waiting on the other end."""
    jitter: float = 0.5
    """Fraction of the backoff drawn at random, so replicas that failed together do not retry together."""

    def delay_s(self, retry_index: int, *, retry_after_s: float | None = None, rand: float = 1.0) -> float:
        """The pause before retry number `retry_index` (0-based); `rand` is a draw from [0, 1)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_delay_s)
        backoff = min(self.base_delay_s * 2.0**retry_index, self.max_delay_s)
        return backoff * (1.0 - self.jitter + self.jitter * rand)


def _pause_for(exc: LLMError, policy: RetryPolicy, retry_index: int, rand: Callable[[], float]) -> float | None:
    if retry_index >= policy.max_retries or not is_retryable(exc):
        return None
    retry_after = exc.retry_after_s if isinstance(exc, LLMHTTPError) else None
    return policy.delay_s(retry_index, retry_after_s=retry_after, rand=rand())


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await `call()`, trying again after a pause while it fails retryably and retries remain."""
    retry_index = 0
    while True:
        try:
            return await call()
        except LLMError as exc:
            pause = _pause_for(exc, policy, retry_index, rand)
            if pause is None:
                raise
        await sleep(pause)
        retry_index += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncGenerator[T, None]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> AsyncGenerator[T, None]:
    """Yield from `open_stream()`, reopening it on a retryable failure only while nothing was yielded yet.

    Once the caller has an item (a customer may already be reading the text), a retry would repeat or
    contradict it, so later failures propagate unchanged.
    """
    retry_index = 0
    while True:
        delivered = False
        try:
            async with aclosing(open_stream()) as items:
                async for item in items:
                    delivered = True
                    yield item
            return
        except LLMError as exc:
            pause = None if delivered else _pause_for(exc, policy, retry_index, rand)
            if pause is None:
                raise
        await sleep(pause)
        retry_index += 1


class CircuitState(enum.Enum):
    CLOSED = "closed"
    """Calls pass; consecutive failures are counted."""
    OPEN = "open"
    """Calls fail at once with CircuitOpenError until the reset time has passed."""
    HALF_OPEN = "half_open"
    """One trial call may pass; its outcome closes or re-opens the circuit."""


class CircuitBreaker:
    """Suspends calls to a backend after consecutive failures, then lets one trial call probe it."""

    def __init__(
        self,
        backend: str,
        *,
        failure_threshold: int,
        reset_s: float,
        clock: Clock = time.monotonic,
        is_failure: Callable[[BaseException], bool] = is_backend_failure,
    ) -> None:
        self.backend = backend
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._is_failure = is_failure
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def admit(self) -> None:
        """Let a call start, or raise CircuitOpenError; every admitted call must end in one `record_*`."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        assert self._opened_at is not None
        if state is CircuitState.OPEN:
            raise CircuitOpenError(self.backend, self._opened_at + self.reset_s - self._clock())
        if self._trial_in_flight:
            raise CircuitOpenError(self.backend, self.reset_s)
        self._trial_in_flight = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def record_abandoned(self) -> None:
        """The call ended with no verdict on the backend (cancelled, or a bug on our side)."""
        self._trial_in_flight = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Admit one call and record how it ended."""
        self.admit()
        try:
            yield
        except LLMError as exc:
            if self._is_failure(exc):
                self.record_failure()
            else:
                self.record_success()
            raise
        except BaseException:
            self.record_abandoned()
            raise
        self.record_success()
