"""Retries with backoff and the circuit breaker, driven by a fake clock and a fake sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

import pytest

from kefu.errors import (
    CircuitOpenError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from kefu.llm.resilience import (
    CircuitBreaker,
    CircuitState,
    RetryPolicy,
    call_with_retries,
    is_backend_failure,
    is_retryable,
    parse_retry_after,
    stream_with_retries,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepRecorder:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def failing_then(results: list[BaseException | str]) -> Callable[[], Awaitable[str]]:
    """An async call that raises or returns the queued outcomes in order."""
    queue = list(results)

    async def call() -> str:
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call


POLICY = RetryPolicy(max_retries=2, base_delay_s=0.1, max_delay_s=1.0, jitter=0.5)


# --- what counts as retryable ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (LLMUnavailableError("refused"), True),
        (LLMTimeoutError("slow"), True),
        (LLMHTTPError(429, "slow down"), True),
        (LLMHTTPError(500, "boom"), True),
        (LLMHTTPError(503, "overloaded"), True),
        (LLMHTTPError(400, "bad request"), False),
        (LLMHTTPError(401, "bad key"), False),
        (LLMHTTPError(404, "no such model"), False),
        (LLMResponseError("not json"), False),
        (CircuitOpenError("openai:x", 10), False),
    ],
)
def test_is_retryable(exc: LLMError, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_a_bad_request_is_not_a_backend_failure_but_garbage_is() -> None:
    assert not is_backend_failure(LLMHTTPError(400, "bad request"))
    assert is_backend_failure(LLMResponseError("not json"))
    assert is_backend_failure(LLMHTTPError(502, "bad gateway"))


# --- Retry-After and backoff ------------------------------------------------------------------


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    assert POLICY.delay_s(0, rand=1.0) == pytest.approx(0.1)
    assert POLICY.delay_s(0, rand=0.0) == pytest.approx(0.05)
    assert POLICY.delay_s(1, rand=1.0) == pytest.approx(0.2)
    assert POLICY.delay_s(2, rand=1.0) == pytest.approx(0.4)
    assert POLICY.delay_s(10, rand=1.0) == pytest.approx(1.0)


def test_retry_after_overrides_backoff_but_is_capped() -> None:
    assert POLICY.delay_s(0, retry_after_s=0.7, rand=0.0) == pytest.approx(0.7)
    assert POLICY.delay_s(0, retry_after_s=120.0) == pytest.approx(1.0)


# --- call_with_retries ---------------------------------------------------------------------------


async def test_retries_retryable_failures_then_succeeds() -> None:
    sleep = SleepRecorder()
    call = failing_then([LLMUnavailableError("refused"), LLMHTTPError(503, "busy"), "answer"])

    assert await call_with_retries(call, POLICY, sleep=sleep, rand=lambda: 1.0) == "answer"
    assert sleep.pauses == pytest.approx([0.1, 0.2])


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    sleep = SleepRecorder()
    call = failing_then([LLMTimeoutError("1"), LLMTimeoutError("2"), LLMTimeoutError("3"), "never"])

    with pytest.raises(LLMTimeoutError, match="3"):
        await call_with_retries(call, POLICY, sleep=sleep)
    assert len(sleep.pauses) == 2


async def test_never_retries_a_client_error() -> None:
    sleep = SleepRecorder()
    call = failing_then([LLMHTTPError(400, "messages must not be empty"), "never"])

    with pytest.raises(LLMHTTPError) as info:
        await call_with_retries(call, POLICY, sleep=sleep)
    assert info.value.status_code == 400
    assert sleep.pauses == []


async def test_honours_retry_after_from_the_endpoint() -> None:
    sleep = SleepRecorder()
    throttled = LLMHTTPError(429, "rate limited", endpoint="http://llm:8000/v1", retry_after_s=0.8)
    call = failing_then([throttled, "answer"])

    assert await call_with_retries(call, POLICY, sleep=sleep, rand=lambda: 0.0) == "answer"
    assert sleep.pauses == [0.8]


async def test_zero_retries_means_one_attempt() -> None:
    sleep = SleepRecorder()
    call = failing_then([LLMUnavailableError("refused"), "never"])

    with pytest.raises(LLMUnavailableError):
        await call_with_retries(call, RetryPolicy(max_retries=0), sleep=sleep)
    assert sleep.pauses == []


# --- stream_with_retries --------------------------------------------------------------------------


def scripted_streams(scripts: list[list[str | LLMError]]) -> Callable[[], AsyncGenerator[str, None]]:
    """Each call opens the next scripted stream: items are yielded, an error is raised."""
    queue = list(scripts)

    async def open_stream() -> AsyncGenerator[str, None]:
        for item in queue.pop(0):
            if isinstance(item, LLMError):
                raise item
            yield item

    return open_stream


async def test_stream_is_reopened_when_it_fails_before_the_first_item() -> None:
    sleep = SleepRecorder()
    streams = scripted_streams([[LLMHTTPError(503, "busy")], ["你好", "!"]])

    items = [item async for item in stream_with_retries(streams, POLICY, sleep=sleep)]

    assert items == ["你好", "!"]
    assert len(sleep.pauses) == 1


async def test_stream_is_never_retried_once_an_item_was_delivered() -> None:
    sleep = SleepRecorder()
    streams = scripted_streams([["Hel", LLMUnavailableError("connection lost")], ["never"]])
    received: list[str] = []

    with pytest.raises(LLMUnavailableError, match="connection lost"):
        async for item in stream_with_retries(streams, POLICY, sleep=sleep):
            received.append(item)

    assert received == ["Hel"]
    assert sleep.pauses == []


# --- CircuitBreaker ----------------------------------------------------------------------------------


def make_breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("openai:qwen3-8b", failure_threshold=3, reset_s=30.0, clock=clock)


def state(breaker: CircuitBreaker) -> CircuitState:
    # A call, not the property, so the type checker does not narrow the state across clock moves.
    return breaker.state


def fail(breaker: CircuitBreaker, exc: LLMError | None = None) -> None:
    with pytest.raises(LLMError), breaker.guard():
        raise exc or LLMUnavailableError("refused")


def test_breaker_opens_after_consecutive_failures_and_rejects_calls() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)

    fail(breaker)
    fail(breaker)
    assert state(breaker) is CircuitState.CLOSED
    fail(breaker)
    assert state(breaker) is CircuitState.OPEN

    clock.advance(10)
    with pytest.raises(CircuitOpenError) as info:
        breaker.admit()
    assert info.value.retry_in_s == pytest.approx(20.0)
    assert "openai:qwen3-8b" in str(info.value)


def test_a_success_resets_the_failure_count() -> None:
    breaker = make_breaker(FakeClock())
    fail(breaker)
    fail(breaker)
    with breaker.guard():
        pass
    fail(breaker)
    fail(breaker)
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 2


def test_client_errors_do_not_open_the_breaker() -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(5):
        fail(breaker, LLMHTTPError(400, "bad request"))
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        fail(breaker)

    clock.advance(30)
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.record_success()

    assert state(breaker) is CircuitState.CLOSED
    breaker.admit()


def test_a_failed_trial_reopens_for_a_full_reset_period() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        fail(breaker)

    clock.advance(31)
    fail(breaker)

    assert state(breaker) is CircuitState.OPEN
    clock.advance(29)
    assert state(breaker) is CircuitState.OPEN
    clock.advance(1)
    assert state(breaker) is CircuitState.HALF_OPEN


def test_a_cancelled_trial_frees_the_slot_without_a_verdict() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        fail(breaker)
    clock.advance(30)

    with pytest.raises(asyncio.CancelledError), breaker.guard():
        raise asyncio.CancelledError

    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.admit()
