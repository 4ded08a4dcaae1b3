"""One turn's place in an experiment, and the canary model that falls back to the control's when it fails."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from kefu.errors import CircuitOpenError, LLMError
from kefu.llm.base import LLMBackend
from kefu.llm.types import Completion, GenerationOptions, Message, StreamEvent
from kefu.release.spec import ArmName

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ArmTurn:
    """Which experiment and arm serve this turn; filled at its start, stored with its reply."""

    experiment: str
    arm: ArmName
    """The arm that serves this turn."""
    assigned: ArmName
    """The arm the session is assigned to (differs from `arm` once the canary is rolled back or promoted)."""
    assign_session: bool = False
    """This is the session's first turn in the experiment: its assignment is stored with the reply."""
    arm_error: str | None = None
    """The canary's model failed in this turn (the error code) and the control's answered instead."""


class CanaryFallbackLLM:
    """The canary's model for one turn; when a call fails, the control arm's model answers and the failure is noted
    on the turn, so the customer sees no error while the rollback rule still counts it."""

    def __init__(self, canary: LLMBackend, control: LLMBackend, turn: ArmTurn) -> None:
        self.canary = canary
        self.control = control
        self.turn = turn

    @property
    def name(self) -> str:
        return self.canary.name

    @property
    def model(self) -> str:
        return self.canary.model

    def _failed(self, exc: LLMError) -> None:
        self.turn.arm_error = exc.code
        # An open circuit repeats what the failures that opened it said; one line each for those is enough.
        log.log(
            logging.DEBUG if isinstance(exc, CircuitOpenError) else logging.WARNING,
            "canary model %s failed (%s) in experiment %s; the control model answers this call",
            self.canary.name,
            exc.code,
            self.turn.experiment,
        )

    async def complete(self, messages: Sequence[Message], options: GenerationOptions) -> Completion:
        try:
            return await self.canary.complete(messages, options)
        except LLMError as exc:
            self._failed(exc)
        return await self.control.complete(messages, options)

    async def stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[StreamEvent]:
        started = False
        try:
            # Closed at once when the caller stops early (a customer who left): that frees the model's slot.
            async with aclosing(_events(self.canary.stream(messages, options))) as events:
                async for event in events:
                    started = True
                    yield event
            return
        except LLMError as exc:
            if started:
                raise  # the customer has seen part of the canary's reply: it cannot be taken back
            self._failed(exc)
        async with aclosing(_events(self.control.stream(messages, options))) as events:
            async for event in events:
                yield event

    async def check(self) -> str:
        return await self.canary.check()

    async def aclose(self) -> None:
        return None  # both models belong to their arms, which close them


async def _events(stream: AsyncIterator[StreamEvent]) -> AsyncGenerator[StreamEvent, None]:
    """A backend's stream as a generator that can be closed (a backend may hand out any async iterator)."""
    try:
        async for event in stream:
            yield event
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
