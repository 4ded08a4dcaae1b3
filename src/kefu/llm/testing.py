"""The one sanctioned fake LLM: a scripted backend with queued replies and recorded calls.

Tests queue what the model should answer (text, a `Completion` — `tool_call(...)` builds one that calls
tools — or an exception to raise), run kefu, then assert on `calls` and call `assert_complete()`.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from kefu.errors import KefuError
from kefu.llm.types import (
    Completion,
    GenerationOptions,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
)

ScriptedReply = str | Completion | BaseException


class ScriptExhaustedError(KefuError):
    """The scripted backend was called more often than replies were queued."""

    code = "script_exhausted"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request the code under test sent to the model."""

    messages: tuple[Message, ...]
    options: GenerationOptions
    streamed: bool

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)


_CALL_IDS = count(1)


def tool_calls(*calls: tuple[str, Mapping[str, Any]], model: str = "scripted") -> Completion:
    """A scripted reply that calls tools: `tool_calls(("get_product", {"sku": "LM-AU-001"}), ...)`."""
    made = tuple(ToolCall(id=f"call_{next(_CALL_IDS)}", name=name, arguments=dict(args)) for name, args in calls)
    return Completion(text="", model=model, tool_calls=made, finish_reason="tool_calls")


def tool_call(name: str, /, **arguments: Any) -> Completion:
    """A scripted reply that calls one tool: `tool_call("get_product", sku="LM-AU-001")`."""
    return tool_calls((name, arguments))


def _approx_tokens(text: str) -> int:
    return max(1, len(re.findall(r"[\u4e00-\u9fff]|\w+|[^\w\s]", text)))


class ScriptedLLM:
    """Fake backend: answers from a queue; `default_reply` (if set) answers once the queue is empty."""

    def __init__(
        self,
        replies: Iterable[ScriptedReply] = (),
        *,
        model: str = "scripted",
        default_reply: str | None = None,
        delay_s: float = 0.0,
        chunk_chars: int = 4,
    ) -> None:
        self._queue: deque[ScriptedReply] = deque(replies)
        self._model = model
        self.default_reply = default_reply
        self.delay_s = delay_s
        self.chunk_chars = chunk_chars
        self.calls: list[RecordedCall] = []
        self.closed = False
        self.gate: asyncio.Event | None = None
        """When set to an event, every call waits for it before answering (tests of concurrency)."""
        self.active = 0
        """Calls being answered now; `max_active` is the most there ever were at once."""
        self.max_active = 0

    @property
    def name(self) -> str:
        return f"testing:{self._model}"

    @property
    def model(self) -> str:
        return self._model

    def queue(self, *replies: ScriptedReply) -> None:
        self._queue.extend(replies)

    def assert_complete(self) -> None:
        """Fail if queued replies were never consumed."""
        if self._queue:
            raise AssertionError(f"{len(self._queue)} scripted replies were never requested: {list(self._queue)}")

    def _next(self, messages: Sequence[Message], options: GenerationOptions, streamed: bool) -> Completion:
        self.calls.append(RecordedCall(tuple(messages), options, streamed))
        if self._queue:
            reply = self._queue.popleft()
        elif self.default_reply is not None:
            reply = self.default_reply
        else:
            raise ScriptExhaustedError(f"scripted LLM got call #{len(self.calls)} but no reply was queued")
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        prompt = "\n".join(m.content for m in messages)
        return Completion(
            text=reply,
            model=self._model,
            usage=Usage(prompt_tokens=_approx_tokens(prompt), completion_tokens=_approx_tokens(reply)),
        )

    async def _wait(self) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._wait()
            return self._next(messages, options, streamed=False)
        finally:
            self.active -= 1

    async def stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[StreamEvent]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._wait()
            completion = self._next(messages, options, streamed=True)
            text = completion.text
            for start in range(0, len(text), self.chunk_chars):
                await asyncio.sleep(0)
                yield TextDelta(text[start : start + self.chunk_chars])
            yield StreamDone(completion)
        finally:
            self.active -= 1

    async def check(self) -> str:
        return f"scripted backend, {len(self._queue)} replies queued"

    async def aclose(self) -> None:
        self.closed = True
