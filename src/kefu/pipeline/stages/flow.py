"""Flows: a turn that starts or continues a scripted task (return, address change…) is answered by the flow."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kefu.dialogue.engine import FlowOutcome, FlowTurn
from kefu.dialogue.flows import Flow
from kefu.dialogue.state import SessionDialogue
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.safety.pii import PLACEHOLDER
from kefu.understanding.catalogue import Handler
from kefu.understanding.router import OOS_HANDLER
from kefu.understanding.types import Entity

if TYPE_CHECKING:
    from kefu.dialogue.service import Dialogue

_DIGRESSIONS = {Handler.FAQ.value, Handler.KNOWLEDGE.value, Handler.SMALL_TALK.value, Handler.TOOL_AGENT.value}


def _language_neutral(text: str, entities: Sequence[Entity]) -> bool:
    """Only codes, numbers and punctuation ("LM26110625", "0827"): no sign of a language switch."""
    for entity in entities:
        if entity.text:
            text = text.replace(entity.text, " ")
    text = PLACEHOLDER.sub(" ", text)
    return not re.search(r"[A-Za-z]{2,}|[\u4e00-\u9fff]", text)


class RunFlow:
    """Advances the session's flow (or starts one) and persists the dialogue state."""

    name = "flow"

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        dialogue = deps.dialogue
        if dialogue is None:
            return
        assert ctx.session is not None
        state = await session_dialogue(ctx, dialogue)
        understanding = ctx.understanding
        decision = understanding.intent if understanding else None
        route = understanding.route if understanding else None
        unsure = route is not None and route.handler == OOS_HANDLER
        if ctx.handoff_reason is not None:
            state.finish("handoff")  # the customer asked for a person mid-flow: the ticket carries the slots
        elif not ctx.done:
            entities = understanding.entities if understanding else ()
            start = None
            if route is not None and route.handler == Handler.FLOW.value and not unsure:
                start = dialogue.library.for_intent(
                    decision.intent if decision else None, {e.type for e in entities}, ctx.input.text
                )
                if start is not None and state.active is None and not entities:
                    # "你们支持以旧换新吗" asks about the shop's rules, not the customer's own order: knowledge
                    # answers it instead of a task asking for an order number.
                    if dialogue.library.commands.asks_about_policy(ctx.input.text):
                        ctx.trace["flow"] = {"skipped": start.name, "reason": "policy question"}
                        start = None
            digression = route is not None and route.handler in _DIGRESSIONS and not unsure
            if state.active is not None and _language_neutral(ctx.input.text, entities):
                ctx.language = "en" if state.active.language == "en" else "zh"
            turn = flow_turn(ctx, deps, entities, start=start, digression=digression)
            open_run = state.active
            outcome = await dialogue.engine.handle(state, turn)
            if outcome.handled and open_run is not None and open_run.intent and "started" not in outcome.events:
                # The open flow took the message ("0827" for the phone digits it asked for): the turn is that
                # task's, whatever the classifier made of four digits (the understanding trace keeps its guess).
                ctx.intent = open_run.intent
            apply_flow_outcome(ctx, outcome)
            ctx.resume_prompt = outcome.resume_prompt
        await dialogue.states.save(ctx.session.id, ctx.session.tenant_id, state)


async def session_dialogue(ctx: TurnContext, dialogue: Dialogue) -> SessionDialogue:
    """The session's flow state, read once per turn and kept on `ctx` for the stages after (the answer cache's
    lookup, the understanding or the flow stage, whichever needs it first)."""
    assert ctx.session is not None
    if ctx.dialogue is None:
        ctx.dialogue = await dialogue.states.load(ctx.session.id, new_session=ctx.new_session)
    return ctx.dialogue


def flow_turn(
    ctx: TurnContext, deps: TurnDeps, entities: Sequence[Entity], *, start: Flow | None, digression: bool = False
) -> FlowTurn:
    """The customer's message as the flow engine sees it (placeholders resolvable to the real values)."""
    assert ctx.session is not None
    vault, cipher = ctx.pii, deps.safety.cipher if deps.safety else None
    return FlowTurn(
        session_id=ctx.session.id,
        text=ctx.input.text,
        language=ctx.language,
        entities=entities,
        start=start,
        intent=ctx.intent,
        digression=digression,
        resolve_pii=(lambda token: vault.original(token, cipher)) if vault is not None else lambda token: None,
    )


def apply_flow_outcome(ctx: TurnContext, outcome: FlowOutcome) -> None:
    """Record what the flow did, and let its reply (or its handoff) answer the turn when it took the message."""
    trace: dict[str, Any] = {
        "flow": outcome.flow,
        "step": outcome.step,
        "events": outcome.events,
        "actions": [a.as_trace() for a in outcome.actions],
        "slots": outcome.slots,
    }
    if outcome.error:
        trace["error"] = outcome.error
    if outcome.flow is not None:
        ctx.trace["flow"] = trace
    if outcome.handled:
        ctx.intent = ctx.intent or outcome.flow
        ctx.reply = outcome.reply
        ctx.route = "flow"
        if outcome.handoff is not None:
            ctx.handoff_reason = outcome.handoff
        else:
            ctx.finish(outcome.reply, route="flow")
