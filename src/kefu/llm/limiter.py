"""Per-backend concurrency limits: at most N requests in flight, the rest wait in a fair, bounded queue.

A model server serves a handful of requests well and a flood badly (vLLM preempts, llama.cpp queues behind its
slots with no timeout), so each backend gets a `FairLimiter`. Waiting requests are admitted round-robin: first
across tenants, then across the conversations of a tenant, so one busy tenant or one chatty conversation cannot
starve the others. The conversation a call belongs to is taken from the context (`fair_share`, set by the turn
runner), so no call site has to pass it along. A request that cannot get a slot fails with `LLMBusyError`, which
the pipeline turns into its usual bilingual apology.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Protocol

from kefu.config import LLMBackendSettings
from kefu.errors import LLMBusyError
from kefu.llm.base import LLMBackend, close_stream
from kefu.llm.types import Completion, GenerationOptions, Message, StreamEvent

FairnessKey = tuple[str, str]
"""(tenant, conversation): who a request is queued for."""
BACKGROUND: FairnessKey = ("", "background")
"""Calls made outside a customer turn (warm-up, `kefu doctor`) share one place in the queue."""
OPENAI_DEFAULT_CONCURRENCY = 32
"""Default limit for a server: enough to keep vLLM's continuous batching busy, few enough not to flood it."""

_FAIRNESS: ContextVar[FairnessKey | None] = ContextVar("kefu_llm_fairness", default=None)


@contextmanager
def fair_share(tenant: str, conversation: str) -> Iterator[None]:
    """LLM calls made inside this block wait in the queue as (tenant, conversation)."""
    token = _FAIRNESS.set((tenant, conversation))
    try:
        yield
    finally:
        _FAIRNESS.reset(token)


def fairness_key() -> FairnessKey:
    return _FAIRNESS.get() or BACKGROUND


def concurrency_limit(settings: LLMBackendSettings) -> int:
    """`max_concurrency`, or its default: one request per llama.cpp slot in process, 32 for a server."""
    if settings.max_concurrency is not None:
        return settings.max_concurrency
    return settings.n_parallel if settings.backend == "embedded" else OPENAI_DEFAULT_CONCURRENCY


class LimiterObserver(Protocol):
    """Receives a limiter's state as it changes (the Prometheus metrics implement it)."""

    def llm_slots(self, backend: str, *, limit: int, in_flight: int, waiting: int) -> None: ...

    def llm_waited(self, backend: str, seconds: float) -> None:
        """A request got its slot after `seconds` in the queue (0 when one was free)."""
        ...

    def llm_refused(self, backend: str, reason: str) -> None:
        """A request failed with `llm_busy`: `queue_full` or `timeout`."""
        ...


class FairLimiter:
    """At most `max_concurrency` holders at once; waiters are admitted round-robin across tenants, then across
    conversations, and a freed slot passes straight to the next waiter (no barging)."""

    def __init__(
        self,
        backend: str,
        *,
        max_concurrency: int,
        max_queue: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        observer: LimiterObserver | None = None,
    ) -> None:
        self.backend = backend
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._clock = clock
        self._observer = observer
        self._in_flight = 0
        self._waiting = 0
        self._queues: OrderedDict[str, OrderedDict[str, deque[asyncio.Future[None]]]] = OrderedDict()

    @classmethod
    def from_settings(cls, backend: str, settings: LLMBackendSettings) -> FairLimiter:
        return cls(
            backend,
            max_concurrency=concurrency_limit(settings),
            max_queue=settings.max_queue,
            timeout_s=settings.queue_timeout_s,
        )

    @property
    def in_flight(self) -> int:
        """Requests holding a slot (including one just handed a slot that has not resumed yet)."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        return self._waiting

    def observe(self, observer: LimiterObserver | None) -> None:
        self._observer = observer
        self._report()

    @asynccontextmanager
    async def slot(self, key: FairnessKey | None = None) -> AsyncIterator[None]:
        """Hold one slot for the block; `key` defaults to the caller's `fair_share`."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, key: FairnessKey | None = None) -> None:
        """Wait for a slot; raise `LLMBusyError` when the queue is full or the wait exceeds `timeout_s`."""
        if self._in_flight < self.max_concurrency and not self._waiting:
            self._in_flight += 1
            self._report()
            if self._observer is not None:
                self._observer.llm_waited(self.backend, 0.0)
            return
        if self._waiting >= self.max_queue:
            self._refuse("queue_full", 0.0)
        tenant, conversation = key or fairness_key()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, OrderedDict()).setdefault(conversation, deque()).append(granted)
        self._waiting += 1
        self._report()
        started = self._clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.shield(granted)
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.release()  # a slot was handed over just as the wait ended: pass it on
            else:
                granted.cancel()
                self._forget(tenant, conversation, granted)
            if isinstance(exc, TimeoutError):
                self._refuse("timeout", self._clock() - started)
            raise
        if self._observer is not None:
            self._observer.llm_waited(self.backend, self._clock() - started)

    def release(self) -> None:
        """Give a slot back: to the next waiter in round-robin order, or to the pool."""
        while self._waiting:
            granted = self._next_waiter()
            if not granted.done():
                granted.set_result(None)  # the slot changes hands; in_flight stays the same
                self._report()
                return
        self._in_flight -= 1
        self._report()

    def _next_waiter(self) -> asyncio.Future[None]:
        tenant, conversations = next(iter(self._queues.items()))
        conversation, queue = next(iter(conversations.items()))
        granted = queue.popleft()
        self._waiting -= 1
        # Whoever was served goes to the back of its line: the next tenant, and the tenant's next conversation.
        if queue:
            conversations.move_to_end(conversation)
        else:
            del conversations[conversation]
        if conversations:
            self._queues.move_to_end(tenant)
        else:
            del self._queues[tenant]
        return granted

    def _forget(self, tenant: str, conversation: str, granted: asyncio.Future[None]) -> None:
        conversations = self._queues.get(tenant)
        queue = conversations.get(conversation) if conversations is not None else None
        if conversations is None or queue is None or granted not in queue:
            return
        queue.remove(granted)
        self._waiting -= 1
        if not queue:
            del conversations[conversation]
            if not conversations:
                del self._queues[tenant]
        self._report()

    def _refuse(self, reason: str, waited_s: float) -> None:
        if self._observer is not None:
            self._observer.llm_refused(self.backend, reason)
        raise LLMBusyError(
            self.backend, reason, in_flight=self._in_flight, waiting=self._waiting, waited_s=waited_s
        ) from None

    def _report(self) -> None:
        if self._observer is not None:
            self._observer.llm_slots(
                self.backend, limit=self.max_concurrency, in_flight=self._in_flight, waiting=self._waiting
            )


class LimitedLLM:
    """An `LLMBackend` whose calls each hold a slot of a `FairLimiter`; a stream holds it until it is closed."""

    def __init__(self, backend: LLMBackend, limiter: FairLimiter) -> None:
        self.backend = backend
        self.limiter = limiter

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def breaker(self) -> object | None:
        """The wrapped backend's circuit breaker, if it has one (read by /metrics)."""
        return getattr(self.backend, "breaker", None)

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        async with self.limiter.slot():
            return await self.backend.complete(messages, options)

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> AsyncGenerator[StreamEvent, None]:
        async with self.limiter.slot():
            events = self.backend.stream(messages, options)
            try:
                async for event in events:
                    yield event
            finally:
                await close_stream(events)

    async def check(self) -> str:
        return await self.backend.check()  # a probe at start-up or from `kefu doctor`: not queued behind customers

    async def aclose(self) -> None:
        await self.backend.aclose()


def limiters_of(backends: Iterable[LLMBackend]) -> list[FairLimiter]:
    """The distinct limiters behind `backends`, looking through wrappers (role defaults) that expose `.backend`."""
    found: dict[int, FairLimiter] = {}
    for backend in backends:
        current: object = backend
        while current is not None:
            if isinstance(current, LimitedLLM):
                found.setdefault(id(current.limiter), current.limiter)
                break
            current = getattr(current, "backend", None)
    return list(found.values())
