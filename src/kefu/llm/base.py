"""The one interface every LLM backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from kefu.llm.types import Completion, GenerationOptions, Message, StreamEvent


@runtime_checkable
class LLMBackend(Protocol):
    """Turns a list of messages into a completion, whole or streamed.

    Implementations translate kefu's types to their vendor format and raise only
    `kefu.errors.LLMError` subclasses. Cancelling the caller's task cancels the request.
    """

    @property
    def name(self) -> str:
        """Backend kind and model, for records and logs (e.g. ``openai:qwen3-8b``)."""
        ...

    @property
    def model(self) -> str:
        """Model name recorded on each reply."""
        ...

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion: ...

    def stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[StreamEvent]:
        """Yield `TextDelta`s, then exactly one `StreamDone`."""
        ...

    async def check(self) -> str:
        """Probe the backend; return a one-line status or raise `LLMError`. Used by `kefu doctor`."""
        ...

    async def aclose(self) -> None: ...


async def close_stream(events: AsyncIterator[StreamEvent]) -> None:
    """End a backend's stream now, read to the end or not: that ends its request and frees its slot at once,
    instead of whenever the abandoned generator is garbage-collected."""
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()
