"""After answering a question asked in the middle of a flow, remind the customer where the flow stands."""

from __future__ import annotations

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps

_KEEP_AS_IS = {"guard", "handoff", "human", "handoff_waiting", "flow"}


class ResumeFlow:
    """Appends the open flow's pending question to the reply."""

    name = "resume"
    runs_after_finish = True

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        if not ctx.resume_prompt or ctx.route in _KEEP_AS_IS or not ctx.reply.strip():
            return
        # A streaming channel gets the addition when the reply settles (kefu.pipeline.checked_stream).
        ctx.reply = ctx.reply.rstrip() + "\n\n" + ctx.resume_prompt
