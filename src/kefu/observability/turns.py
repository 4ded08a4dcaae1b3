"""What the runner reports about each turn: its spans while it runs, its metrics once it is over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from kefu.errors import KefuError
from kefu.observability.logging import REQUEST_ID
from kefu.observability.metrics import GuardOutcome, KefuMetrics, TokenUse, TurnRecord
from kefu.observability.tracing import TurnTracer

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from kefu.pipeline.context import TurnContext, TurnEvents
    from kefu.pipeline.deps import TurnDeps

_WITH_A_PERSON = {"human", "handoff_waiting"}
"""Routes of a session a person already has: its turns are not new handoffs."""

_NO_SPAN: AbstractContextManager[None] = nullcontext()
"""The context of a stage when no tracer is set: one for every stage of every turn (some 18 a turn)."""


class FirstTextClock:
    """Wraps a streaming channel's events and notes when the customer is first sent text."""

    streaming = True

    def __init__(self, inner: TurnEvents) -> None:
        self.inner = inner
        self.first_at: float | None = None

    async def started(self, ctx: TurnContext) -> None:
        await self.inner.started(ctx)

    async def delta(self, text: str) -> None:
        if self.first_at is None and text:
            self.first_at = time.perf_counter()
        await self.inner.delta(text)

    async def replace(self, text: str) -> None:
        if self.first_at is None and text:
            self.first_at = time.perf_counter()
        await self.inner.replace(text)


class TurnTelemetry:
    """Feeds finished turns to the metrics and wraps the turn and each stage in a span; does nothing without either."""

    def __init__(self, metrics: KefuMetrics | None = None, tracer: TurnTracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @contextmanager
    def turn(self, ctx: TurnContext, deps: TurnDeps) -> Iterator[None]:
        if self.metrics is None and self.tracer is None:
            yield
            return
        clock = None
        if ctx.events.streaming:
            clock = FirstTextClock(ctx.events)
            ctx.events = clock
        if self.metrics is not None:
            self.metrics.turns_in_progress.inc()
        failure: BaseException | None = None
        span_cm: AbstractContextManager[Span | None] = (
            self.tracer.span("kefu.turn", {"kefu.channel": ctx.input.channel}) if self.tracer else nullcontext()
        )
        with span_cm as span:
            try:
                yield
            except BaseException as exc:
                failure = exc
                raise
            finally:
                if span is not None:
                    span.set_attributes(_turn_attributes(ctx, failure))
                if self.metrics is not None:
                    self.metrics.turns_in_progress.dec()
                    if not ctx.duplicate:
                        self.metrics.record_turn(_record(ctx, deps, clock, failure))

    def stage(self, name: str, ctx: TurnContext) -> AbstractContextManager[None]:
        """A context manager around one stage: its span, with the route and intent known when it ends."""
        return self._stage_span(name, ctx) if self.tracer is not None else _NO_SPAN

    @contextmanager
    def _stage_span(self, name: str, ctx: TurnContext) -> Iterator[None]:
        assert self.tracer is not None
        with self.tracer.span(f"kefu.stage.{name}", {"kefu.stage": name}) as span:
            try:
                yield
            finally:
                span.set_attributes({"kefu.route": ctx.route or "", "kefu.intent": ctx.intent or ""})


def _error_of(ctx: TurnContext, failure: BaseException | None) -> str | None:
    if ctx.error_code is not None:
        return ctx.error_code
    if failure is None:
        return None
    if isinstance(failure, KefuError):
        return failure.code
    return "cancelled" if isinstance(failure, asyncio.CancelledError) else "internal_error"


def _handoff_reason(ctx: TurnContext) -> str | None:
    if ctx.route in _WITH_A_PERSON or ctx.silent:
        return None
    if ctx.handoff_reason is not None:
        return ctx.handoff_reason
    if ctx.handoff:
        return "guard" if ctx.route == "guard" else "other"
    return None


def _tokens(ctx: TurnContext, deps: TurnDeps) -> tuple[TokenUse, ...]:
    uses: list[TokenUse] = []
    if ctx.usage is not None:
        chat = deps.llms.get("chat")
        model = ctx.model or (chat.model if chat is not None else "unknown")
        uses.append(TokenUse(model, ctx.usage.prompt_tokens, ctx.usage.completion_tokens))
    rewrite = ctx.trace.get("rewrite_usage")
    llm = deps.llms.get("rewrite")
    if isinstance(rewrite, dict) and llm is not None:
        uses.append(
            TokenUse(llm.model, int(rewrite.get("prompt_tokens") or 0), int(rewrite.get("completion_tokens") or 0))
        )
    return tuple(uses)


def _guards(ctx: TurnContext, deps: TurnDeps) -> tuple[GuardOutcome, ...]:
    """Verdicts from what the guard stages put in the trace (`input_guard`: tripped or suspicious; `output_guard`:
    tripped; `stream`: held back or retracted); a guard that ran and left nothing there passed."""
    if not deps.settings.guards.enabled or deps.safety is None:
        return ()
    outcomes: list[GuardOutcome] = []
    seen = ctx.trace.get("input_guard")
    input_tripped = isinstance(seen, dict) and bool(seen.get("tripped"))
    if "guard_input" in ctx.stage_ms:
        if isinstance(seen, dict):
            outcomes.append(GuardOutcome("input", "tripped" if input_tripped else "flagged", seen.get("kind")))
        else:
            outcomes.append(GuardOutcome("input", "passed"))
    if "guard_output" in ctx.stage_ms and not input_tripped and not ctx.silent and ctx.reply:
        checked = ctx.trace.get("output_guard")
        if isinstance(checked, dict):
            outcomes.append(GuardOutcome("output", "tripped", checked.get("kind")))
        else:
            outcomes.append(GuardOutcome("output", "passed"))
    streamed = ctx.trace.get("stream")
    if isinstance(streamed, dict):
        # The streaming checks held text back (`held`), or text already shown was replaced (`retracted`).
        verdict = "retracted" if streamed.get("replaced") else "held"
        outcomes.append(GuardOutcome("stream", verdict, streamed.get("held")))
    return tuple(outcomes)


def _record(
    ctx: TurnContext, deps: TurnDeps, clock: FirstTextClock | None, failure: BaseException | None
) -> TurnRecord:
    now = time.perf_counter()
    first_text_s = None
    if clock is not None and clock.first_at is not None:
        first_text_s = clock.first_at - ctx.started_at
    elif clock is not None and ctx.reply and not ctx.silent:
        first_text_s = now - ctx.started_at  # nothing streamed: the whole reply is the first text
    return TurnRecord(
        channel=ctx.input.channel,
        route=ctx.route,
        intent=ctx.intent,
        seconds=now - ctx.started_at,
        stages={stage: ms / 1000 for stage, ms in ctx.stage_ms.items()},
        first_text_s=first_text_s,
        error=_error_of(ctx, failure),
        handoff_reason=_handoff_reason(ctx),
        tokens=_tokens(ctx, deps),
        guards=_guards(ctx, deps),
    )


def _turn_attributes(ctx: TurnContext, failure: BaseException | None) -> dict[str, str | int | bool]:
    attributes: dict[str, str | int | bool] = {
        "kefu.route": ctx.route or "",
        "kefu.intent": ctx.intent or "",
        "kefu.handoff": ctx.handoff,
    }
    if ctx.session is not None:
        attributes["kefu.session_id"] = ctx.session.id
    request_id = REQUEST_ID.get()
    if request_id:
        attributes["kefu.request_id"] = request_id
    error = _error_of(ctx, failure)
    if error:
        attributes["kefu.error_code"] = error
    if ctx.model:
        attributes["kefu.model"] = ctx.model
    if ctx.usage is not None:
        attributes["kefu.tokens.input"] = ctx.usage.prompt_tokens
        attributes["kefu.tokens.output"] = ctx.usage.completion_tokens
    return attributes
