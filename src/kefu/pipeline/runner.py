"""Runs one customer turn through the stages: intake → processing stages → persist reply.

Intake must succeed (an unstored message is never processed). A failing processing stage ends the
turn with a bilingual apology and a recorded error; the reply is stored whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kefu.errors import KefuError
from kefu.llm.limiter import fair_share
from kefu.observability.logging import bind_session
from kefu.observability.turns import TurnTelemetry
from kefu.pipeline.checked_stream import CheckedStream
from kefu.pipeline.context import SilentEvents, TurnContext, TurnEvents, TurnInput
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.session_queue import SessionQueue, WorkerLocks
from kefu.pipeline.stages import Stage
from kefu.pipeline.stages.agent import RunToolAgent
from kefu.pipeline.stages.cache import ServeCachedAnswer, ServeSimilarAnswer, StoreAnswer
from kefu.pipeline.stages.flow import RunFlow
from kefu.pipeline.stages.generate import GenerateReply
from kefu.pipeline.stages.grounding import CheckGrounding
from kefu.pipeline.stages.guard_input import GuardInput
from kefu.pipeline.stages.guard_output import GuardOutput
from kefu.pipeline.stages.handoff import HandOff
from kefu.pipeline.stages.human import DeferToHuman
from kefu.pipeline.stages.intake import StoreCustomerMessage
from kefu.pipeline.stages.knowledge import AnswerFromKnowledge
from kefu.pipeline.stages.persist import StoreReply
from kefu.pipeline.stages.prompt import AssemblePrompt
from kefu.pipeline.stages.resume import ResumeFlow
from kefu.pipeline.stages.understand import UnderstandTurn
from kefu.pipeline.stages.unresolved import EscalateUnresolved

if TYPE_CHECKING:
    from kefu.release import Release

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What a channel tells the customer about a finished turn."""

    session_id: str
    message_id: str
    reply_to: str
    reply: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    intent: str | None = None
    route: str | None = None
    handoff: bool = False
    latency_ms: float = 0.0
    error: str | None = None
    client_message_id: str | None = None
    duplicate: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    silent: bool = False
    """A human agent owns the session: nothing was said by the bot (the agent answers over the console)."""


def default_stages() -> list[Stage]:
    """The processing stages between intake and persistence; later features insert theirs here."""
    # Understanding reads the guarded (PII-redacted) text, so no personal data reaches its trace.
    return [
        GuardInput(),
        DeferToHuman(),
        ServeCachedAnswer(),
        UnderstandTurn(),
        RunFlow(),
        HandOff(),
        RunToolAgent(),
        AnswerFromKnowledge(),
        ServeSimilarAnswer(),
        AssemblePrompt(),
        GenerateReply(),
        CheckGrounding(),
        GuardOutput(),
        ResumeFlow(),
        EscalateUnresolved(),
        StoreAnswer(),
    ]


class TurnRunner:
    """Chains the stages over one `TurnContext`, times each of them and reports the turn to its telemetry."""

    def __init__(
        self,
        deps: TurnDeps,
        stages: Sequence[Stage] | None = None,
        *,
        intake: Stage | None = None,
        persist: Stage | None = None,
        telemetry: TurnTelemetry | None = None,
        release: Release | None = None,
        session_locks: WorkerLocks | None = None,
    ) -> None:
        """`session_locks`: the lock other workers and replicas take around a session's turn (see `SessionQueue`)."""
        self.deps = deps
        self.release = release
        """A running gray release gives each turn its arm's dependencies (docs/release.md)."""
        self.intake = intake or StoreCustomerMessage()
        self.stages = list(stages) if stages is not None else default_stages()
        self.persist = persist or StoreReply()
        self.telemetry = telemetry or TurnTelemetry()
        self._inflight: dict[tuple[str, str, str], asyncio.Future[TurnResult]] = {}
        self.sessions = SessionQueue(session_locks)

    async def run(self, turn: TurnInput, events: TurnEvents | None = None) -> TurnResult:
        """Run one turn; a resend of a message still being processed waits for it instead of running twice."""
        key = self._inflight_key(turn)
        if key is None:
            return await self._run(turn, events)
        running = self._inflight.get(key)
        if running is not None:
            result = await asyncio.shield(running)
            return replace(result, duplicate=True)
        future: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        # Mark any failure as retrieved: the waiters (if any) re-raise it, nobody else needs it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = future
        try:
            result = await self._run(turn, events)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    @staticmethod
    def _inflight_key(turn: TurnInput) -> tuple[str, str, str] | None:
        if turn.client_message_id is None:
            return None
        conversation = turn.session_id or f"{turn.channel}:{turn.user_id}"
        return turn.tenant_id, conversation, turn.client_message_id

    async def _run(self, turn: TurnInput, events: TurnEvents | None) -> TurnResult:
        ctx = TurnContext(input=turn, events=events or SilentEvents())
        # The turn's LLM calls queue as this conversation, so a busy one cannot starve the others of model slots.
        conversation = turn.session_id or f"{turn.channel}:{turn.user_id}"
        with self.telemetry.turn(ctx, self.deps), fair_share(turn.tenant_id, conversation):
            return await self._process(ctx)

    async def _process(self, ctx: TurnContext) -> TurnResult:
        await self._timed(self.intake, ctx)
        if ctx.session is not None:
            bind_session(ctx.session.id)  # from here on, this turn's log lines name its session
        if ctx.duplicate:
            return self._result(ctx)
        if ctx.session is None:
            return await self._answer(ctx)
        async with self.sessions.turn(ctx.session.id):
            return await self._answer(ctx)

    async def _answer(self, ctx: TurnContext) -> TurnResult:
        """Everything after the customer's message is stored, one turn of a session at a time."""
        deps = (self.release.begin(ctx) if self.release is not None else None) or self.deps
        await ctx.events.started(ctx)
        stream = CheckedStream.around(ctx, deps)  # streamed text is checked before it is shown
        try:
            for stage in self.stages:
                # A finished turn skips the remaining stages, except those that check every reply (output guard).
                if ctx.done and not getattr(stage, "runs_after_finish", False):
                    continue
                await self._timed(stage, ctx, deps)
        except asyncio.CancelledError:
            # The customer went away mid-turn: keep what was said and why it stopped, then let go.
            self._record_failure(ctx, "cancelled", "customer disconnected before the reply finished")
            ctx.reply = ctx.reply or deps.prompts.reply("fallback_cancelled", ctx.language)
            await asyncio.shield(self._timed(self.persist, ctx, deps))
            raise
        except KefuError as exc:
            self._record_failure(ctx, exc.code, str(exc))
            ctx.reply = deps.prompts.reply("fallback_error", ctx.language)
        except Exception as exc:
            log.exception("turn failed in an unexpected way (session %s)", ctx.session.id if ctx.session else "?")
            self._record_failure(ctx, "internal_error", f"{type(exc).__name__}: {exc}")
            ctx.reply = deps.prompts.reply("fallback_error", ctx.language)
        if ctx.silent and ctx.error is None:
            return self._silent_result(ctx)  # a human agent owns the session: the bot says nothing
        if not ctx.reply.strip():
            self._record_failure(ctx, "empty_reply", "the model returned an empty reply")
            ctx.reply = deps.prompts.reply("fallback_error", ctx.language)
        if stream is not None:
            await stream.settle(ctx.reply)  # the rest of the reply, or `replace` when it changed
        await self._timed(self.persist, ctx, deps)
        if self.release is not None:
            self.release.finish(ctx)
        return self._result(ctx)

    async def _timed(self, stage: Stage, ctx: TurnContext, deps: TurnDeps | None = None) -> None:
        start = time.perf_counter()
        try:
            with self.telemetry.stage(stage.name, ctx):
                await stage(ctx, deps or self.deps)
        finally:
            ctx.stage_ms[stage.name] = round((time.perf_counter() - start) * 1000, 3)

    @staticmethod
    def _record_failure(ctx: TurnContext, code: str, message: str) -> None:
        ctx.error_code, ctx.error = code, message
        ctx.route = ctx.route or "fallback"
        # The message may echo model or customer text (personal data): it goes to the store, not the log.
        log.warning("turn error %s in session %s", code, ctx.session.id if ctx.session else "?")

    @staticmethod
    def _silent_result(ctx: TurnContext) -> TurnResult:
        assert ctx.session is not None and ctx.customer_message is not None
        return TurnResult(
            session_id=ctx.session.id,
            message_id=ctx.customer_message.id,
            reply_to=ctx.customer_message.id,
            reply="",
            route="human",
            handoff=True,
            latency_ms=round(ctx.elapsed_ms(), 3),
            client_message_id=ctx.customer_message.client_message_id,
            silent=True,
        )

    @staticmethod
    def _result(ctx: TurnContext) -> TurnResult:
        assert ctx.session is not None and ctx.customer_message is not None and ctx.stored_reply is not None
        reply = ctx.stored_reply
        return TurnResult(
            session_id=ctx.session.id,
            message_id=reply.id,
            reply_to=ctx.customer_message.id,
            reply=reply.text,
            citations=reply.citations,
            intent=reply.intent,
            route=reply.route,
            handoff=reply.handoff,
            latency_ms=reply.latency_ms or 0.0,
            error=reply.error_code,
            client_message_id=ctx.customer_message.client_message_id,
            duplicate=ctx.duplicate,
            prompt_tokens=reply.prompt_tokens or 0,
            completion_tokens=reply.completion_tokens or 0,
        )
