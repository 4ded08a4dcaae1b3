"""Runs flows: fills slots from what the customer says, verifies ownership, calls actions, branches, confirms.

Business decisions are made here and in the flow files, never by the language model: a write happens only
after the customer confirmed it, only on an order the verified customer owns, and only once (each write
carries an idempotency key derived from the flow run and the step, so a resend or a restart replays it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from jinja2 import TemplateError

from kefu.connectors import ActionResult, Actions
from kefu.dialogue.flows import Flow, FlowLibrary, Outcome, SlotSpec, Step
from kefu.dialogue.guardrail import check_identity
from kefu.dialogue.state import FlowRun, Identity, SessionDialogue
from kefu.dialogue.templates import FlowTemplates
from kefu.language import Language
from kefu.safety.pii import PLACEHOLDER
from kefu.shop import Bilingual
from kefu.understanding.types import Entity

log = logging.getLogger(__name__)

_MAX_STEPS_PER_TURN = 60
_PHONE_LAST4 = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_PHONE_FULL = re.compile(r"(?<!\d)(1[3-9]\d{9})(?!\d)")
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)

_FIXED = {
    "cancelled": Bilingual(
        zh="好的，已为您取消“{flow}”，没有做任何更改。还有什么可以帮您？",
        en="OK, I've stopped the {flow}; nothing was changed. Anything else I can help with?",
    ),
    "declined": Bilingual(
        zh="好的，没有提交，什么都没有更改。还有其他需要吗？",
        en="OK, I haven't submitted anything and nothing was changed. Anything else?",
    ),
    "not_understood": Bilingual(zh="抱歉，我没有识别出来。", en="Sorry, I didn't catch that."),
    "too_many_attempts": Bilingual(
        zh="看来我没能帮上忙，我为您转接人工客服。",
        en="It seems I can't get this right, so I'm bringing in a colleague.",
    ),
    "backend_down": Bilingual(
        zh="抱歉，系统暂时无法办理该业务，我为您转接人工客服，稍后由同事继续处理。",
        en="Sorry, our system can't process this right now. I'm passing you to a colleague who will take it from here.",
    ),
    "backend_refused": Bilingual(
        zh="抱歉，这项申请未能提交：{message}", en="Sorry, this request could not be submitted: {message}"
    ),
    "switched": Bilingual(zh="好的，我们先处理这个。", en="Sure, let's do that first."),
    "resume": Bilingual(zh="我们接着办理“{flow}”：", en="Back to your {flow}: "),
    "corrected": Bilingual(zh="好的，已更正。", en="Got it, corrected."),
    "already_done": Bilingual(
        zh="“{flow}”已经办理完成，不会重复提交。还有什么可以帮您？",
        en="Your {flow} is already done; nothing was submitted twice. Anything else I can help with?",
    ),
}


def normalise_command(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _PUNCT.sub("", text)


@dataclass(frozen=True, slots=True)
class FlowTurn:
    """What the engine needs to know about one customer message."""

    session_id: str
    text: str
    """The (PII-redacted) message."""
    language: Language
    entities: Sequence[Entity] = ()
    start: Flow | None = None
    """The flow this message's intent would start (the router chose a flow handler)."""
    intent: str | None = None
    """The message's intent, kept on a run it starts (`FlowRun.intent`)."""
    digression: bool = False
    """The message confidently asks something else (a policy question): answer it, then resume."""
    resolve_pii: Callable[[str], str | None] = lambda token: None
    """Placeholder ("[PHONE_1:5678]") → the real value, for backend actions that need it."""


@dataclass(slots=True)
class ActionCall:
    """One action the engine called this turn, for the turn's trace and the scenario runner."""

    action: str
    args: dict[str, Any]
    result: ActionResult
    write: bool

    def as_trace(self) -> dict[str, Any]:
        return {"action": self.action, "args": self.args, "write": self.write, **self.result.as_trace()}


@dataclass(slots=True)
class FlowOutcome:
    """What the flow says and does this turn."""

    handled: bool
    """False: the flow did not take this message (no flow, or a digression the knowledge stages answer)."""
    reply: str = ""
    flow: str | None = None
    step: str | None = None
    handoff: str | None = None
    """A handoff reason when the flow brings in a person."""
    resume_prompt: str | None = None
    """For a digression: what to add after the answer so the customer knows the flow is still open."""
    actions: list[ActionCall] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    """What happened, for the trace: started, filled:order_id, corrected:order_id, confirmed, switched…"""
    error: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    """The flow's slots at the end of the turn (the handoff ticket carries them)."""


class _TypedValue(str):
    """A slot value recognised as an entity, remembering which entity type it was."""

    entity_type: str

    def __new__(cls, value: str, entity_type: str) -> _TypedValue:
        instance = super().__new__(cls, value)
        instance.entity_type = entity_type
        return instance


def _fill(run: FlowRun, name: str, value: Any) -> None:
    if isinstance(value, _TypedValue):
        run.results.setdefault("slot_types", {})[name] = value.entity_type
        value = str(value)
    run.slots[name] = value


class _Finished(Exception):
    pass


ORDER_ENTITY = "order_number"


class FlowEngine:
    """Advances a session's flow by one customer message."""

    def __init__(
        self,
        library: FlowLibrary,
        actions: Actions,
        *,
        clock: Callable[[], datetime],
        policy: dict[str, Any] | None = None,
        templates: FlowTemplates | None = None,
    ) -> None:
        self.library = library
        self.actions = actions
        self.clock = clock
        self.policy = policy or {}
        self.templates = templates or FlowTemplates()
        commands = library.commands
        self._cancel = {normalise_command(p) for p in commands.cancel.all()}
        self._confirm = {normalise_command(p) for p in commands.confirm.all()}
        self._decline = {normalise_command(p) for p in commands.decline.all()}
        self._corrections = [normalise_command(p) for p in commands.correction_cues.all()]

    # ---- entry point ---------------------------------------------------------------------------------------

    async def handle(self, state: SessionDialogue, turn: FlowTurn) -> FlowOutcome:
        run = state.active
        if run is not None and self.library.get(run.flow) is None:
            state.finish("flow_removed")  # the operator deleted the flow since the last turn
            run = None
        if run is None:
            if turn.start is None:
                return self._after_completion(state, turn)
            return await self._start(state, turn, turn.start, [])
        flow = self.library.get(run.flow)
        assert flow is not None
        command = normalise_command(turn.text)
        # At a yes/no question "不用了" is a "no" (the step's on_decline answers it), not "stop the task"
        if command in self._cancel and run.awaiting_kind != "confirm":
            state.finish("cancelled")
            reply = self._fixed("cancelled", turn.language, flow=flow.description.pick(turn.language))
            return FlowOutcome(handled=True, reply=reply, flow=flow.name, events=["cancelled"])
        out = FlowOutcome(handled=True, flow=flow.name)
        replies: list[str] = []
        if self._apply_correction(run, flow, turn, out):
            replies.append(self._fixed("corrected", turn.language))
        elif run.awaiting is not None and not await self._answer(state, run, flow, turn, out, replies):
            if turn.start is not None and turn.start.name != flow.name:
                types = run.results.get("slot_types", {})
                known = {types[name]: (name, run.slots[name]) for name in run.slots if name in types}
                state.finish("switched")
                switched = [*replies, self._fixed("switched", turn.language)]
                return await self._start(state, turn, turn.start, switched, known)
            if turn.digression:
                prompt = self._pending_prompt(run, flow, turn.language, state)
                lead = self._fixed("resume", turn.language, flow=flow.description.pick(turn.language))
                if flow.resume is not None:
                    lead = self._render(flow.resume, turn.language, self._variables(state, run, turn.language))
                return FlowOutcome(
                    handled=False, flow=flow.name, resume_prompt=f"{lead}{prompt}", events=["digression"]
                )
            key = run.awaiting or "?"
            run.attempts[key] = run.attempts.get(key, 0) + 1
            state.unresolved_streak += 1
            if run.attempts[key] >= self._max_attempts(run, flow):
                out.slots = dict(run.slots)
                return self._give_up(state, flow, turn.language, out, replies, reason="slot_attempts_exhausted")
            replies.append(self._invalid_text(run, flow, turn.language, state))
            replies.append(self._pending_prompt(run, flow, turn.language, state))
            out.reply = "\n".join(r for r in replies if r)
            out.step = run.step
            out.slots = dict(run.slots)
            out.events.append(f"not_recognised:{key}")
            return out
        return await self._advance(state, run, flow, turn, out, replies)

    def answers_question(self, state: SessionDialogue, turn: FlowTurn) -> bool:
        """Whether the message plainly answers what the session's open flow asked, changing nothing.

        A recognised value for the slot it asked for (its entity, its pattern or one of its choices), a phone
        number or its last four digits at an identity check, a yes or no to a confirmation, or a cancel word. Free
        text never counts: a slot that takes any text would take a message that asks something else.
        """
        run = state.active
        flow = self.library.get(run.flow) if run is not None else None
        if run is None or flow is None or run.awaiting is None:
            return False
        kind, target = run.awaiting_kind, run.awaiting_target
        command = normalise_command(turn.text)
        if command in self._cancel:
            return True
        if kind == "collect" and target in flow.slots:
            # as when a flow starts (`prefill`): an entity, the slot's pattern or one of its choices, no free text
            return self._recognise(flow.slots[target], turn, prefill=True) is not None
        if kind == "confirm":
            return command in self._confirm or command in self._decline
        if kind == "verify":
            return self._phone(turn) is not None
        return False

    def _after_completion(self, state: SessionDialogue, turn: FlowTurn) -> FlowOutcome:
        """A "确认" / "yes" right after a task was completed (a double tap, a resend) is told it is done already,
        instead of reaching the model with a bare "yes"; only once per completed task."""
        last = state.recent[-1] if state.recent else None
        if last is None or last.get("outcome") != "completed" or last.get("acknowledged"):
            return FlowOutcome(handled=False)
        if normalise_command(turn.text) not in self._confirm:
            return FlowOutcome(handled=False)
        flow = self.library.get(str(last.get("flow")))
        if flow is None:
            return FlowOutcome(handled=False)
        state.recent = [*state.recent[:-1], {**last, "acknowledged": True}]
        reply = self._fixed("already_done", turn.language, flow=flow.description.pick(turn.language))
        return FlowOutcome(handled=True, reply=reply, flow=flow.name, events=["already_done"])

    # ---- starting, answering, correcting -------------------------------------------------------------------

    async def _start(
        self,
        state: SessionDialogue,
        turn: FlowTurn,
        flow: Flow,
        replies: list[str],
        carried: dict[str, tuple[str, Any]] | None = None,
    ) -> FlowOutcome:
        """Start `flow`; `carried` (entity type → slot value) keeps what the customer already said when switching."""
        run = FlowRun(
            flow=flow.name,
            run_id=uuid.uuid4().hex[:16],
            step=flow.steps[0].id,
            language=turn.language,
            intent=turn.intent,
        )
        context_filled: list[str] = []
        for name, spec in flow.slots.items():
            value = self._extract(spec, turn, prefill=True)
            if value is None and carried:
                value = next((carried[t][1] for t in spec.entity_types if t in carried), None)
            if value is None and ORDER_ENTITY in spec.entity_types and state.identity and state.identity.orders:
                # "换成冰川蓝" right after checking LM26110625: the order just discussed (confirmations name it,
                # and "不对，是 LM…" corrects it)
                value = state.identity.orders[-1]
                context_filled.append(name)
            if value is not None:
                _fill(run, name, value)
        state.active = run
        events = ["started", *(f"filled:{s}" for s in run.slots), *(f"from_context:{s}" for s in context_filled)]
        out = FlowOutcome(handled=True, flow=flow.name, events=events)
        return await self._advance(state, run, flow, turn, out, replies)

    async def _answer(
        self, state: SessionDialogue, run: FlowRun, flow: Flow, turn: FlowTurn, out: FlowOutcome, replies: list[str]
    ) -> bool:
        """Use the message as the answer to what the flow asked; False when it is not one."""
        kind, target = run.awaiting_kind, run.awaiting_target
        assert target is not None
        if kind == "collect":
            value = self._extract(flow.slots[target], turn, prefill=False)
            if value is None:
                return False
            if not self._valid(flow.slots[target], str(value), state, run, turn.language):
                return False
            _fill(run, target, value)
            out.events.append(f"filled:{target}")
        elif kind == "confirm":
            command = normalise_command(turn.text)
            if command in self._confirm:
                run.results[f"confirmed:{target}"] = True
                out.events.append("confirmed")
            elif command in self._decline or command in self._cancel:
                step = flow.steps[flow.step_index(target)]
                outcome = step.on_decline or Outcome(reply=_FIXED["declined"], end=True)
                out.events.append("declined")
                run.results[f"declined:{target}"] = True
                if outcome.reply is not None:
                    replies.append(
                        self._render(outcome.reply, turn.language, self._variables(state, run, turn.language))
                    )
                if outcome.goto is None and not outcome.clear:
                    state.finish("declined")
                    run.awaiting = None
                    return True
                self._jump(run, flow, outcome)
            else:
                return False
        elif kind == "verify":
            phone = self._phone(turn)
            if phone is None:
                return False
            run.results["_phone"] = phone  # held for this turn only; removed before the state is saved
        run.awaiting = None
        state.unresolved_streak = 0
        return True

    def _apply_correction(self, run: FlowRun, flow: Flow, turn: FlowTurn, out: FlowOutcome) -> bool:
        """ "不对，是 LM26110625": a new value for a slot already filled rewinds the flow to where it was asked."""
        if not turn.entities:
            return False
        command = normalise_command(turn.text)
        cued = any(cue and cue in command for cue in self._corrections)
        awaited = run.awaiting_target if run.awaiting_kind == "collect" else None
        for name, spec in flow.slots.items():
            if spec.entity is None or name not in run.slots or name == awaited:
                continue
            if awaited is not None and set(flow.slots[awaited].entity_types) & set(spec.entity_types):
                continue  # the value answers the question being asked, not a correction
            new = next((e for e in turn.entities if e.type in spec.entity_types and e.source == "text"), None)
            if new is None or new.value == run.slots[name]:
                continue
            if not cued and run.awaiting_kind == "collect":
                continue
            _fill(run, name, _TypedValue(new.value, new.type))
            self._forget_after(run, flow, name)
            out.events.append(f"corrected:{name}")
            return True
        return False

    def _forget_after(self, run: FlowRun, flow: Flow, slot: str) -> None:
        """Rewind to the step that collects `slot`; results and confirmations of later steps are dropped."""
        step_id = flow.collect_step(slot) or flow.steps[0].id
        index = flow.step_index(step_id)
        later = {s.id for s in flow.steps[index:]}
        saved = {s.save_as for s in flow.steps[index:] if s.save_as}
        run.results = {k: v for k, v in run.results.items() if k not in saved and k.split(":", 1)[-1] not in later}
        run.step = step_id
        run.awaiting = None

    # ---- running steps -------------------------------------------------------------------------------------

    async def _advance(
        self, state: SessionDialogue, run: FlowRun, flow: Flow, turn: FlowTurn, out: FlowOutcome, replies: list[str]
    ) -> FlowOutcome:
        lang = turn.language
        try:
            if state.active is run:
                await self._run_steps(state, run, flow, turn, out, replies)
        except _Finished:
            pass
        except TemplateError as exc:
            log.warning("flow %s step %s: template failed (%s)", flow.name, run.step, type(exc).__name__)
            out.error = f"template error in flow {flow.name} step {run.step}: {exc}"
            replies.append(self._fixed("backend_down", lang))
            out.handoff = "flow_error"
            state.finish("error")
        run.results.pop("_phone", None)
        out.reply = "\n".join(r for r in replies if r)
        out.step = run.step
        out.slots = dict(run.slots)
        return out

    async def _run_steps(
        self, state: SessionDialogue, run: FlowRun, flow: Flow, turn: FlowTurn, out: FlowOutcome, replies: list[str]
    ) -> None:
        lang = turn.language
        for _ in range(_MAX_STEPS_PER_TURN):
            step = flow.steps[flow.step_index(run.step)]
            variables = self._variables(state, run, lang)
            if step.when is not None and not self.templates.evaluate(step.when, variables):
                self._next(state, run, flow, step, out)
                continue
            if step.collect is not None:
                if step.collect in run.slots:
                    self._next(state, run, flow, step, out)
                    continue
                run.awaiting = f"collect:{step.collect}"
                replies.append(self._render(flow.slots[step.collect].prompt, lang, variables))
                return
            if step.verify is not None:
                verdict = await self._verify(state, run, flow, step, turn, out, replies)
                if verdict == "waiting":
                    return
                if verdict == "verified":
                    self._next(state, run, flow, step, out)
                continue
            if step.call is not None:
                await self._call(state, run, flow, step, turn, out, replies)
                continue
            if step.branch is not None:
                arm = next((b for b in step.branch if self.templates.evaluate(b.if_, variables)), None)
                if arm is not None:
                    out.events.append(f"branch:{step.id}")
                    self._outcome(state, run, flow, arm, lang, out, replies)
                    continue
                # No arm holds: the step's own reply/handoff (if any) is the fall-through.
            if step.confirm is not None:
                if run.results.get(f"confirmed:{step.id}"):
                    self._next(state, run, flow, step, out)
                    continue
                run.awaiting = f"confirm:{step.id}"
                replies.append(self._render(step.confirm, lang, variables))
                return
            for slot, source in step.set_.items():
                _fill(run, slot, self.templates.render(source, variables))
            if step.reply is not None:
                replies.append(self._render(step.reply, lang, variables))
            if step.handoff is not None:
                out.handoff = step.handoff
                state.finish("handoff")
                raise _Finished
            self._next(state, run, flow, step, out)
        raise RuntimeError(f"flow {flow.name} ran {_MAX_STEPS_PER_TURN} steps in one turn; does it loop?")

    def _next(self, state: SessionDialogue, run: FlowRun, flow: Flow, step: Step, out: FlowOutcome) -> None:
        if step.end:
            state.finish("completed")
            state.unresolved_streak = 0
            out.events.append("completed")
            raise _Finished
        if step.goto is not None:
            run.step = step.goto
            return
        index = flow.step_index(step.id) + 1
        if index >= len(flow.steps):
            state.finish("completed")
            state.unresolved_streak = 0
            out.events.append("completed")
            raise _Finished
        run.step = flow.steps[index].id

    def _outcome(
        self,
        state: SessionDialogue,
        run: FlowRun,
        flow: Flow,
        outcome: Outcome,
        lang: Language,
        out: FlowOutcome,
        replies: list[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        if outcome.reply is not None:
            replies.append(self._render(outcome.reply, lang, {**self._variables(state, run, lang), **(extra or {})}))
        if outcome.handoff is not None:
            out.handoff = outcome.handoff
            state.finish("handoff")
            raise _Finished
        if outcome.end:
            state.finish("completed")
            out.events.append("ended")
            raise _Finished
        for slot in outcome.clear:
            run.slots.pop(slot, None)
            key = f"collect:{slot}"
            run.attempts[key] = run.attempts.get(key, 0) + 1
            if run.attempts[key] >= flow.slots[slot].max_attempts:
                self._give_up(state, flow, lang, out, replies, reason="slot_attempts_exhausted")
                raise _Finished
        self._jump(run, flow, outcome)
        if outcome.goto is None and not outcome.clear:
            self._next(state, run, flow, flow.steps[flow.step_index(run.step)], out)

    def _jump(self, run: FlowRun, flow: Flow, outcome: Outcome) -> None:
        if outcome.goto is not None:
            run.step = outcome.goto
        elif outcome.clear:
            self._forget_after(run, flow, outcome.clear[0])

    async def _verify(
        self,
        state: SessionDialogue,
        run: FlowRun,
        flow: Flow,
        step: Step,
        turn: FlowTurn,
        out: FlowOutcome,
        replies: list[str],
    ) -> Literal["verified", "waiting", "jumped"]:
        """Whether the order in the step's slot is the verified customer's; otherwise asks, or refuses and rewinds."""
        assert step.verify is not None
        settings = self.library.identity
        lang = turn.language
        order_id = str(run.slots.get(step.verify, ""))
        identity = state.identity
        if identity is not None and order_id in identity.orders:
            identity.orders.remove(order_id)
            identity.orders.append(order_id)  # the last one is the order "it" refers to in the next task
            return "verified"
        if identity is not None:
            result = await self._invoke(settings.order_action, {"order_id": order_id}, run, step, out, write=False)
            if result.ok and str(result.data.get(settings.owner_field)) == identity.user_id:
                identity.orders.append(order_id)
                return "verified"
            if result.ok:
                out.events.append("not_owner")
                replies.append(self._render(settings.not_owner, lang, {"order_id": order_id}))
                self._outcome(state, run, flow, Outcome(clear=[step.verify]), lang, out, replies)
                return "jumped"
            self._action_failed(state, run, flow, step, result, lang, out, replies)
            return "jumped"
        phone = run.results.get("_phone")
        if phone is None:
            run.awaiting = f"verify:{step.verify}"
            replies.append(self._render(settings.prompt, lang, {}))
            return "waiting"
        result = await self._invoke(
            settings.verify_action, {"order_id": order_id, "phone": phone}, run, step, out, write=False
        )
        run.results.pop("_phone", None)
        if result.ok and result.data.get("verified"):
            state.identity = Identity(user_id=str(result.data.get("user_id")), orders=[order_id])
            out.events.append("verified")
            return "verified"
        if not result.ok:
            self._action_failed(state, run, flow, step, result, lang, out, replies)
            return "jumped"
        if result.data.get("reason") == "order_not_found":
            # The order number is wrong, not the phone: ask for the order again.
            step_error = step.on_error.get("order_not_found")
            if step_error is not None:
                self._outcome(state, run, flow, step_error, lang, out, replies, {"error": result.data})
                return "jumped"
        key = f"verify:{step.verify}"
        run.attempts[key] = run.attempts.get(key, 0) + 1
        state.unresolved_streak += 1
        out.events.append("verify_failed")
        if run.attempts[key] >= settings.max_attempts:
            self._give_up(state, flow, lang, out, replies, reason="identity_not_verified")
            raise _Finished
        replies.append(self._render(settings.mismatch, lang, {}))
        replies.append(self._render(settings.prompt, lang, {}))
        run.awaiting = key
        return "waiting"

    async def _call(
        self,
        state: SessionDialogue,
        run: FlowRun,
        flow: Flow,
        step: Step,
        turn: FlowTurn,
        out: FlowOutcome,
        replies: list[str],
    ) -> None:
        assert step.call is not None
        spec = self.actions.get(step.call)
        assert spec is not None  # checked when the flows were loaded
        variables = self._variables(state, run, turn.language)
        args = {
            name: self._argument(self.templates.render(source, variables), turn) for name, source in step.with_.items()
        }
        # Guardrail: whatever a flow file says, an action never touches an order the customer was not verified for.
        verdict = check_identity(spec, args, state.identity)
        if not verdict.allowed:
            out.error = verdict.reason(spec.name)
            log.warning("flow %s step %s: %s", flow.name, step.id, out.error)
            replies.append(self._render(self.library.identity.not_owner, turn.language, {"order_id": verdict.value}))
            state.finish("refused")
            raise _Finished
        result = await self._invoke(step.call, args, run, step, out, write=spec.writes)
        if result.ok:
            if step.save_as:
                run.results[step.save_as] = result.data
            self._next(state, run, flow, step, out)
            return
        self._action_failed(state, run, flow, step, result, turn.language, out, replies)

    async def _invoke(
        self, action: str, args: dict[str, Any], run: FlowRun, step: Step, out: FlowOutcome, *, write: bool
    ) -> ActionResult:
        key = None
        if write:
            material = json.dumps([run.run_id, step.id, action, args], sort_keys=True, ensure_ascii=False, default=str)
            key = "kefu-" + hashlib.sha256(material.encode()).hexdigest()[:32]
        result = await self.actions.call(action, args, idempotency_key=key)
        shown = {k: ("***" if k == "phone" else v) for k, v in args.items()}
        out.actions.append(ActionCall(action=action, args=shown, result=result, write=write))
        return result

    def _action_failed(
        self,
        state: SessionDialogue,
        run: FlowRun,
        flow: Flow,
        step: Step,
        result: ActionResult,
        lang: Language,
        out: FlowOutcome,
        replies: list[str],
    ) -> None:
        code = result.error_code or "backend_error"
        error = {"code": code, "message": result.message}
        handler = step.on_error.get(code) or (None if result.unavailable else step.on_error.get("default"))
        state.unresolved_streak += 1
        if handler is not None:
            out.events.append(f"error:{code}")
            self._outcome(state, run, flow, handler, lang, out, replies, {"error": error})
            return  # the outcome moved the flow on (goto / clear): the caller continues from there
        # No plan for this error: a person takes over, never a crash and never a guess.
        out.error = f"{step.call or step.verify}: {code} {result.message}".strip()
        if result.unavailable:
            replies.append(self._fixed("backend_down", lang))
            out.handoff = "backend_failure"
        else:
            replies.append(self._fixed("backend_refused", lang, message=result.message or code))
            out.handoff = "action_refused"
        state.finish("error")
        raise _Finished

    # ---- helpers -------------------------------------------------------------------------------------------

    def _give_up(
        self,
        state: SessionDialogue,
        flow: Flow,
        lang: Language,
        out: FlowOutcome,
        replies: list[str],
        *,
        reason: str,
    ) -> FlowOutcome:
        replies.append(self._fixed("too_many_attempts", lang))
        out.handoff = reason
        out.events.append("gave_up")
        state.finish("gave_up")
        out.reply = "\n".join(r for r in replies if r)
        return out

    def _extract(self, spec: SlotSpec, turn: FlowTurn, *, prefill: bool) -> Any:
        value = self._recognise(spec, turn, prefill=prefill)
        if isinstance(value, str) and PLACEHOLDER.search(value):
            # The input guard masked personal data ("文三路100号" → "[ADDRESS_1]"); the task needs the real value,
            # and only this turn's vault is sure to hold it, so it is swapped back now and kept in the slot.
            real = PLACEHOLDER.sub(lambda m: turn.resolve_pii(m.group(0)) or m.group(0), value)
            value = _TypedValue(real, value.entity_type) if isinstance(value, _TypedValue) else real
        return value

    def _recognise(self, spec: SlotSpec, turn: FlowTurn, *, prefill: bool) -> Any:
        if spec.entity is not None:
            entity = next((e for e in turn.entities if e.type in spec.entity_types), None)
            if entity is not None:
                return _TypedValue(entity.value, entity.type)
        if spec.pattern is not None:
            match = re.search(spec.pattern, turn.text)
            if match is not None:
                return match.group(1) if match.groups() else match.group(0)
        if spec.choices is not None:
            lowered = unicodedata.normalize("NFKC", turn.text).lower()
            best: tuple[int, str] | None = None
            for value, phrases in spec.choices.items():
                for phrase in phrases.all():
                    if phrase.lower() in lowered and (best is None or len(phrase) > best[0]):
                        best = (len(phrase), value)
            if best is not None:
                return best[1]
        if spec.free_text and not prefill:
            text = turn.text.strip()
            command = normalise_command(text)
            if text and command not in self._confirm and command not in self._decline:
                return text
        return None

    def _valid(self, spec: SlotSpec, value: Any, state: SessionDialogue, run: FlowRun, lang: Language) -> bool:
        if spec.validate_ is None:
            return True
        variables = {**self._variables(state, run, lang), "value": value}
        return bool(self.templates.evaluate(spec.validate_, variables))

    @staticmethod
    def _phone(turn: FlowTurn) -> str | None:
        for entity in turn.entities:
            if entity.type == "phone":
                return turn.resolve_pii(entity.value) or entity.value
        for token in re.findall(r"\[(?:PHONE|LANDLINE)_\d+(?::\d{4})?\]", turn.text):
            real = turn.resolve_pii(token)
            if real is not None:
                return real
            tail = re.search(r":(\d{4})\]", token)
            if tail:
                return tail.group(1)
        full = _PHONE_FULL.search(turn.text)
        if full is not None:
            return full.group(1)
        last4 = _PHONE_LAST4.findall(turn.text)
        return last4[-1] if len(last4) == 1 else None

    @staticmethod
    def _argument(value: str, turn: FlowTurn) -> str:
        """A placeholder the input guard put in the text is swapped back for the real value the backend needs."""
        if value.startswith("[") and value.endswith("]"):
            return turn.resolve_pii(value) or value
        return value

    def _variables(self, state: SessionDialogue, run: FlowRun, lang: Language) -> dict[str, Any]:
        identity = state.identity
        results = {k: v for k, v in run.results.items() if ":" not in k and not k.startswith("_")}
        return {
            **results,
            "slots": dict(run.slots),
            "identity": {"user_id": identity.user_id, "orders": list(identity.orders)} if identity else None,
            "now": self.clock(),
            "policy": self.policy,
            "lang": lang,
        }

    def _render(self, text: Bilingual, lang: Language, variables: dict[str, Any]) -> str:
        return self.templates.render(text.pick(lang), {**variables, "lang": lang})

    def _pending_prompt(self, run: FlowRun, flow: Flow, lang: Language, state: SessionDialogue) -> str:
        kind, target = run.awaiting_kind, run.awaiting_target
        variables = self._variables(state, run, lang)
        if kind == "collect" and target in flow.slots:
            return self._render(flow.slots[target].prompt, lang, variables)
        if kind == "confirm" and target is not None:
            step = flow.steps[flow.step_index(target)]
            if step.confirm is not None:
                return self._render(step.confirm, lang, variables)
        if kind == "verify":
            return self._render(self.library.identity.prompt, lang, {})
        return ""

    def _invalid_text(self, run: FlowRun, flow: Flow, lang: Language, state: SessionDialogue) -> str:
        target = run.awaiting_target
        if run.awaiting_kind == "collect" and target in flow.slots and flow.slots[target].invalid is not None:
            invalid = flow.slots[target].invalid
            assert invalid is not None
            return self._render(invalid, lang, self._variables(state, run, lang))
        return self._fixed("not_understood", lang)

    def _max_attempts(self, run: FlowRun, flow: Flow) -> int:
        target = run.awaiting_target
        if run.awaiting_kind == "collect" and target in flow.slots:
            return flow.slots[target].max_attempts
        return self.library.identity.max_attempts

    @staticmethod
    def _fixed(key: str, lang: Language, **values: str) -> str:
        return _FIXED[key].pick(lang).format(**values)
