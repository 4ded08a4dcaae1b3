"""Understand the customer's message: intent, entities, emotion, language and where the turn should go.

The decision and its reasons are recorded on the reply (trace "understanding" and "route") whatever
answers in the end. A handoff decision is passed on (`ctx.handoff_reason`) to the handoff stage; flows,
curated answers and the knowledge/LLM stages answer the rest.
"""

from __future__ import annotations

from typing import Any

from kefu.language import detect_language, language_mix
from kefu.llm.types import Message
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.history import earlier_messages
from kefu.pipeline.stages.flow import flow_turn, session_dialogue
from kefu.safety.pii import PLACEHOLDER
from kefu.store import MessageRecord
from kefu.understanding.catalogue import Handler
from kefu.understanding.router import OOS_HANDLER
from kefu.understanding.types import DialogueState, UnderstandingResult

_HISTORY_WINDOW = 12
"""Earlier messages understanding weighs (dialogue state, conversation for the LLM fallback)."""
_ANSWERED_HERE = {Handler.HANDOFF.value}


def dialogue_state(earlier: list[MessageRecord], owner: str) -> DialogueState:
    """What the last `_HISTORY_WINDOW` earlier messages say: how many turns, how unhappy the customer has been
    lately, failed bot replies."""
    records = earlier[-_HISTORY_WINDOW:]
    replies = [r for r in records if r.role == "assistant"]
    streak = 0
    for reply in reversed(replies):
        if reply.emotion not in ("negative", "angry"):
            break
        streak += 1
    last = replies[-1] if replies else None
    return DialogueState(
        turns=sum(1 for r in records if r.role == "user"),
        negative_streak=streak,
        previous_intent=last.intent if last else None,
        previous_route=last.route if last else None,
        failed_replies=sum(1 for r in replies if r.error_code is not None),
        owner=owner,
    )


def _words_language(text: str) -> str | None:
    """The scripts of the customer's own words; a placeholder ("[PHONE_1:0827]") is no word of theirs."""
    return language_mix(PLACEHOLDER.sub(" ", text))


class UnderstandTurn:
    """Fills ctx.intent, ctx.language and ctx.understanding; hands off to a person when the router says so."""

    name = "understand"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        understanding = deps.understanding
        if understanding is None:
            return
        assert ctx.session is not None and ctx.customer_message is not None
        history: list[Message] = []
        state = DialogueState(owner=ctx.session.owner)
        if not ctx.new_session:
            earlier = await earlier_messages(ctx, deps)
            state = dialogue_state(earlier, ctx.session.owner)
            earlier = earlier[-_HISTORY_WINDOW:]
            history = [
                Message("user" if r.role == "user" else "assistant", r.redacted_text or r.text)
                for r in earlier
                if r.role in ("user", "assistant", "agent") and r.error_code is None
            ]
            if _words_language(ctx.input.text) is None:
                # "LM26110133" or "0827" alone: answer in the language the customer has been writing in
                said = next((r.text for r in reversed(earlier) if r.role == "user" and _words_language(r.text)), None)
                if said is not None:
                    ctx.language = detect_language(PLACEHOLDER.sub(" ", said))
        settings = deps.settings.understanding
        llm = deps.llm("classification") if settings.llm_fallback else None
        answered: list[bool] = []
        dialogue = deps.dialogue
        if dialogue is not None:
            # Needed here already, not only by the flow stage: a message that answers what an open flow asked
            # ("6443" for the phone's last four digits) is the flow's, whatever the classifier makes of it.
            await session_dialogue(ctx, dialogue)

        def answers_flow(result: UnderstandingResult) -> bool:
            if not answered:
                flows = ctx.dialogue
                answered.append(
                    dialogue is not None
                    and flows is not None
                    and flows.active is not None
                    and dialogue.engine.answers_question(flows, flow_turn(ctx, deps, result.entities, start=None))
                )
            return answered[0]

        def settled(result: UnderstandingResult) -> str | None:
            return "the message answers the open flow's question" if answers_flow(result) else None

        result = await understanding.analyse_async(
            ctx.input.text, history, state=state, llm=llm, default_language=ctx.language, settled=settled
        )
        ctx.understanding = result
        ctx.language = result.language
        ctx.intent = result.intent.intent
        handler = result.route.handler
        route: dict[str, Any] = result.route.as_dict()
        ctx.trace["understanding"] = result.as_trace()
        ctx.trace["route"] = route
        if handler in _ANSWERED_HERE:
            # The handoff stage opens the ticket (after the flow stage has closed any open flow).
            ctx.handoff_reason = "customer_request" if result.intent.intent == "human_agent" else "escalation"
            if result.intent.intent == "complaint":
                ctx.handoff_reason = "complaint"
            route["answered_by"] = "handoff"
        elif handler == OOS_HANDLER and settings.oos_reply and not answers_flow(result):
            route["answered_by"] = "oos_decline"
            ctx.finish(deps.prompts.reply("oos_decline", ctx.language), route="oos")
        else:
            # Flows, knowledge and the LLM stages that follow answer the turn.
            route["answered_by"] = "fallthrough"
