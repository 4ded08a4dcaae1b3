"""Handoff: a person takes over. Opens the ticket with the whole context and tells the customer what happens."""

from __future__ import annotations

from typing import Any

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps

_CUSTOMER_ASKED = {"customer_request"}
_TRANSCRIPT_MESSAGES = 20


class HandOff:
    """Ends the turn with the handoff notice (queue position, wait, off-hours) when a stage asked for a person."""

    name = "handoff"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        reason = ctx.handoff_reason
        if reason is None or ctx.silent:
            return
        assert ctx.session is not None
        lead = deps.prompts.reply(
            "handoff_requested" if reason in _CUSTOMER_ASKED else "handoff_escalated", ctx.language
        )
        flow_said = ctx.reply.strip() if ctx.route == "flow" else ""
        ctx.handoff = True
        if deps.handoff is None:
            ctx.finish("\n".join(p for p in (flow_said, lead) if p), route="handoff")
            return
        understanding = ctx.understanding
        emotion = understanding.emotion.label if understanding else None
        notice = await deps.handoff.hand_off(
            session=ctx.session,
            reason=reason,
            language=ctx.language,
            intent=ctx.intent,
            emotion=emotion,
            summary=await self._summary(ctx, deps, reason),
            context=self._context(ctx),
        )
        ctx.trace["handoff"] = {
            "reason": reason,
            "ticket_id": notice.ticket.id,
            "position": notice.position,
            "off_hours": notice.off_hours,
        }
        if flow_said:
            lead = ""  # the flow already said why a colleague is coming
        ctx.finish("\n".join(p for p in (flow_said, lead, notice.text) if p), route="handoff")

    @staticmethod
    def _context(ctx: TurnContext) -> dict[str, Any]:
        understanding = ctx.understanding
        context: dict[str, Any] = {"intent": ctx.intent}
        if understanding is not None:
            context["entities"] = [e.as_dict() for e in understanding.entities]
            context["emotion"] = understanding.emotion.as_dict()
        flow = ctx.trace.get("flow")
        if flow:
            context["flow"] = flow
            context["slots"] = flow.get("slots", {})
        state = ctx.dialogue
        if state is not None:
            if state.recent:
                context["last_flow"] = state.recent[-1]
            if state.identity is not None:
                context["customer"] = {"user_id": state.identity.user_id, "verified_orders": state.identity.orders}
        return context

    @staticmethod
    async def _summary(ctx: TurnContext, deps: TurnDeps, reason: str) -> str:
        """A few lines an agent reads first: why, what the customer wants, what the bot already did."""
        assert ctx.session is not None
        lines = [f"reason: {reason}", f"intent: {ctx.intent or '-'}"]
        understanding = ctx.understanding
        if understanding is not None:
            lines.append(f"emotion: {understanding.emotion.label}")
            if understanding.entities:
                lines.append("mentioned: " + ", ".join(f"{e.type}={e.value}" for e in understanding.entities))
        flow = ctx.trace.get("flow")
        if isinstance(flow, dict) and flow.get("flow"):
            done = [a["action"] + ("" if a.get("ok") else f" ({a.get('error_code')})") for a in flow.get("actions", [])]
            lines.append(
                f"flow: {flow['flow']} at step {flow.get('step')}" + (f"; actions: {', '.join(done)}" if done else "")
            )
        records = await deps.store.list_messages(
            ctx.session.id, limit=_TRANSCRIPT_MESSAGES, tenant_id=ctx.session.tenant_id, words_only=True
        )
        customer = [r.redacted_text or r.text for r in records if r.role == "user"][-3:]
        if customer:
            lines.append("customer said: " + " | ".join(customer))
        return "\n".join(lines)
