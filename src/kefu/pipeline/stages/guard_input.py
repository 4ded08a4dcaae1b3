"""Redact personal data from the customer's message and check it before anything downstream sees it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps


class GuardInput:
    """Replaces `ctx.input.text` by its redacted form, stores that, and ends the turn with a fixed reply on a trip."""

    name = "guard_input"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        safety = deps.safety
        if safety is None:
            return
        assert ctx.session is not None and ctx.customer_message is not None
        original = ctx.input.text
        if safety.detector.find(original):
            vault = safety.vault((await deps.store.session_meta(ctx.session.id)).get("pii"))
            redaction = safety.redactor.redact(original, vault)
            # The original is kept only encrypted, and only where configuration asks for it.
            kept = safety.cipher.encrypt(original) if safety.keep_original and safety.cipher else redaction.text
            # The vault that resolves the new placeholders is saved with the redacted message, in one transaction.
            saved = (ctx.session.id, "pii", vault.dump()) if vault.changed else None
            await deps.store.redact_message(
                ctx.customer_message.id, text_=kept, redacted_text=redaction.text, session_meta=saved
            )
            vault.changed = False
            ctx.pii = vault
            ctx.input = replace(ctx.input, text=redaction.text)
            ctx.trace["pii"] = sorted(set(redaction.kinds))
        guard = safety.input_guard(ctx.session.tenant_id)
        verdict, needs_model = guard.check_fast(ctx.input.text)
        if needs_model:
            # The embedding model is CPU work (and trains on first use): keep the event loop free.
            verdict = await asyncio.to_thread(guard.check_model, ctx.input.text, verdict)
        if verdict.tripped or verdict.score > 0:
            ctx.trace["input_guard"] = verdict.as_trace()
        if verdict.tripped:
            ctx.handoff = ctx.handoff or verdict.handoff
            ctx.finish(deps.prompts.reply(verdict.reply_key or "guard_injection", ctx.language), route="guard")
