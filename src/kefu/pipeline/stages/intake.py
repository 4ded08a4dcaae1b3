"""Persist the customer's message before anything else happens, so nothing is ever lost."""

from __future__ import annotations

from kefu.language import detect_language
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps


class StoreCustomerMessage:
    """Open (or create) the session and commit the customer's message; detect a resend."""

    name = "intake"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        inp = ctx.input
        knowledge = deps.knowledge
        start = await deps.store.start_turn(
            session_id=inp.session_id,
            user_id=inp.user_id,
            channel=inp.channel,
            text_=inp.text,
            tenant_id=inp.tenant_id,
            client_message_id=inp.client_message_id,
            metadata=inp.metadata,
            # The knowledge stage needs the shared knowledge version: read with the message, not in a round of its own.
            also=knowledge.repository.read_version if knowledge is not None else None,
        )
        ctx.session, ctx.customer_message, ctx.new_session = start.session, start.message, start.new_session
        if isinstance(start.also, int):
            ctx.knowledge_version = start.also
        ctx.language = detect_language(inp.text)
        if not start.created:
            ctx.stored_reply = await deps.store.reply_to(ctx.customer_message.id)
            ctx.duplicate = ctx.stored_reply is not None
