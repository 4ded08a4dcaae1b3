"""The tool agent: a turn routed to `tool_agent` that no flow took is answered by the LLM and the intent's tools."""

from __future__ import annotations

from kefu.dialogue.agent import AgentRequest
from kefu.dialogue.state import SessionDialogue
from kefu.llm.types import Message
from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.history import earlier_messages
from kefu.pipeline.stages.flow import apply_flow_outcome, flow_turn, session_dialogue
from kefu.pipeline.stages.handoff import HandOff
from kefu.understanding.catalogue import Handler


class RunToolAgent:
    """Ends the turn with the agent's answer, or starts the flow it chose; every tool call goes into the trace."""

    name = "agent"

    def __init__(self) -> None:
        self._handoff = HandOff()

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        agent, dialogue, understanding = deps.agent, deps.dialogue, ctx.understanding
        if agent is None or dialogue is None or understanding is None:
            return
        if ctx.done or ctx.silent or ctx.handoff_reason is not None:
            return  # a flow, a guard or a person already has the turn
        if understanding.route.handler != Handler.TOOL_AGENT.value:
            return
        intent = understanding.intent.intent
        if intent is None or not agent.tools_for(intent):
            ctx.trace["agent"] = {"skipped": f"intent {intent} lists no tools"}  # knowledge answers instead
            return
        assert ctx.session is not None
        state = await session_dialogue(ctx, dialogue)
        request = AgentRequest(
            intent=intent,
            text=ctx.input.text,
            language=ctx.language,
            identity=state.identity,
            entities=understanding.entities,
            history=await self._history(ctx, deps),
            flow_active=state.active is not None,
        )
        outcome = await agent.run(request, deps.llm("chat"))
        ctx.trace["agent"] = trace = outcome.as_trace()
        if outcome.defer_to_knowledge:
            # Nothing read, nothing answerable ("do you sell used cars?" routed here): the knowledge stages answer
            # it, or decline it and record the gap, as they would have without the agent.
            trace["deferred_to"] = "knowledge"
            return
        route = ctx.trace.get("route")
        if isinstance(route, dict):
            route["answered_by"] = "tool_agent"
        ctx.usage, ctx.prompt = outcome.usage, outcome.prompt
        if outcome.error_code is not None:
            ctx.error_code, ctx.error = outcome.error_code, outcome.error
        if outcome.start_flow is not None:
            await self._start_flow(ctx, deps, state, outcome.start_flow)
            return
        if outcome.decision == "answered":
            ctx.model = outcome.model  # the model's own words: the output guard's promise checks apply
        ctx.finish(outcome.reply, route="agent" if outcome.resolved or outcome.error_code else "no_answer")

    async def _start_flow(self, ctx: TurnContext, deps: TurnDeps, state: SessionDialogue, name: str) -> None:
        """The customer wants a change: the flow takes over (it verifies, and asks before it writes anything)."""
        dialogue, understanding = deps.dialogue, ctx.understanding
        assert dialogue is not None and understanding is not None and ctx.session is not None
        flow = dialogue.library.get(name)
        assert flow is not None  # the agent offers only the library's flows
        outcome = await dialogue.engine.handle(state, flow_turn(ctx, deps, understanding.entities, start=flow))
        apply_flow_outcome(ctx, outcome)
        await dialogue.states.save(ctx.session.id, ctx.session.tenant_id, state)
        if ctx.handoff_reason is not None:
            await self._handoff(ctx, deps)  # the handoff stage has run already: the flow brings in a person itself
        elif not outcome.handled:
            ctx.finish(deps.prompts.reply("agent_unsure", ctx.language), route="no_answer")

    @staticmethod
    async def _history(ctx: TurnContext, deps: TurnDeps) -> list[Message]:
        """The last few messages before this one (redacted), so "the blue one" has something to refer to."""
        wanted = deps.agent.settings.history_messages if deps.agent is not None else 0
        if not wanted or ctx.new_session:
            return []
        history = [
            Message("user" if r.role == "user" else "assistant", r.redacted_text or r.text)
            for r in await earlier_messages(ctx, deps)
            if r.role in ("user", "assistant", "agent") and r.error_code is None
        ]
        return history[-wanted:]
