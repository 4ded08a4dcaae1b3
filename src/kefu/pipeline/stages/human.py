"""While a human agent owns the session, the bot stays silent: the message goes to the agent console."""

from __future__ import annotations

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps


class DeferToHuman:
    """Relays the customer's message to the agents; answers only with the queue position while nobody has it."""

    name = "human"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        assert ctx.session is not None and ctx.customer_message is not None
        if ctx.session.owner != "human" or deps.handoff is None:
            return
        await deps.handoff.relay_customer(ctx.session, ctx.customer_message, ctx.input.text)
        ctx.handoff = True
        waiting = await deps.handoff.waiting_notice(ctx.session, ctx.language)
        if waiting is not None:
            ctx.finish(waiting, route="handoff_waiting")
            return
        ctx.silent = True
        ctx.finish("", route="human")
