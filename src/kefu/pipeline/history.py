"""The conversation before this turn, read once per turn for every stage that looks back."""

from __future__ import annotations

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.store import MessageRecord

EARLIER_READ = 40
"""Earlier messages read per turn: the most any stage uses (the prompt's history, within its token budget)."""


async def earlier_messages(ctx: TurnContext, deps: TurnDeps) -> list[MessageRecord]:
    """The session's last `EARLIER_READ` messages before this turn's own, oldest first, kept on `ctx`.

    Words and the emotion understanding recorded, no traces (`list_messages(words_only=True)`). A message stored
    after this turn's own (a concurrent turn of the same session) is left out.
    """
    assert ctx.session is not None and ctx.customer_message is not None
    if ctx.earlier is None:
        records = (
            []
            if ctx.new_session
            else await deps.store.list_messages(
                ctx.session.id, limit=EARLIER_READ + 1, tenant_id=ctx.session.tenant_id, words_only=True
            )
        )
        message = ctx.customer_message
        ctx.earlier = [r for r in records if r.id != message.id and r.created_at <= message.created_at]
    return ctx.earlier
