"""Persist the bot's reply with its trace: intent, route, sources, model, tokens, per-stage latency, error."""

from __future__ import annotations

from typing import Any

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.store import NewReply


class StoreReply:
    """Commits the reply; runs even when an earlier stage failed, so every turn is on record."""

    name = "persist"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        assert ctx.session is not None and ctx.customer_message is not None
        ctx.stored_reply = await deps.store.add_reply(
            NewReply(
                session_id=ctx.session.id,
                tenant_id=ctx.session.tenant_id,
                reply_to=ctx.customer_message.id,
                text=ctx.reply,
                intent=ctx.intent,
                route=ctx.route,
                citations=[c.as_dict() for c in ctx.citations],
                handoff=ctx.handoff,
                model=ctx.model,
                prompt_tokens=ctx.usage.prompt_tokens if ctx.usage else None,
                completion_tokens=ctx.usage.completion_tokens if ctx.usage else None,
                latency_ms=round(ctx.elapsed_ms(), 3),
                stage_latency_ms=dict(ctx.stage_ms),
                error_code=ctx.error_code,
                error=ctx.error,
                trace=dict(ctx.trace),
                **_release_fields(ctx),
            )
        )


def _release_fields(ctx: TurnContext) -> dict[str, Any]:
    turn = ctx.release
    if turn is None:
        return {}
    return {
        "experiment": turn.experiment,
        "arm": turn.arm,
        "arm_error": turn.arm_error,
        "assign_session": turn.assign_session,
    }
