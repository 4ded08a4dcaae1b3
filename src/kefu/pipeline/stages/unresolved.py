"""The same need unmet three turns in a row (no answer, out of scope, failures): a person takes over."""

from __future__ import annotations

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.stages.handoff import HandOff

UNRESOLVED_TURNS_BEFORE_HANDOFF = 3
_UNRESOLVED_ROUTES = {"no_answer", "oos", "fallback"}


class EscalateUnresolved:
    """Counts consecutive unanswered turns in the dialogue state; on the third, opens a ticket."""

    name = "unresolved"
    runs_after_finish = True

    def __init__(self) -> None:
        self._handoff = HandOff()

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        state, dialogue = ctx.dialogue, deps.dialogue
        if state is None or dialogue is None or ctx.silent or ctx.session is None:
            return
        if ctx.handoff:
            state.unresolved_streak = 0
        elif ctx.route in _UNRESOLVED_ROUTES or ctx.error_code is not None:
            state.unresolved_streak += 1
        elif ctx.route != "flow":
            state.unresolved_streak = 0  # flows count their own failed attempts
        if state.unresolved_streak >= UNRESOLVED_TURNS_BEFORE_HANDOFF and not ctx.handoff:
            state.unresolved_streak = 0
            ctx.handoff_reason = "unresolved"
            ctx.route = None
            ctx.reply = ""
            await self._handoff(ctx, deps)
        await dialogue.states.save(ctx.session.id, ctx.session.tenant_id, state)
