"""The tool agent: the chat model answers what no flow covers, calling only the read actions its intent allows.

What the model may do is decided here, never by the model. It is offered only the intent's read actions
(intents.yaml `tools:`); writes go through flows and their confirmation, which the model can only *start*
(`start_flow`). Every call is checked before the backend is asked: a tool that was not offered is refused,
arguments are validated, and the identity guardrail refuses an order not verified for this session — then
the turn ends with a fixed reply that asks the customer to verify, so nothing about that order can reach them.
An answer with a number that appears in nothing the model was shown (instructions, policy, messages, tool
results) is replaced by a fixed reply — or, when nothing was read from the backend, left to the knowledge
stages. A failing model or backend ends in a bilingual reply with the error on record, never in an exception.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kefu.config import AgentSettings
from kefu.connectors import ActionResult, Actions, ActionSpec
from kefu.datafiles import yaml_line
from kefu.dialogue.flows import FlowLibrary
from kefu.dialogue.guardrail import ORDER_FIELD, IdentityVerdict, check_answer_identity, check_identity
from kefu.dialogue.state import Identity
from kefu.errors import DataFileError
from kefu.knowledge.grounding import extract_numbers
from kefu.language import Language
from kefu.llm.base import LLMBackend
from kefu.llm.types import GenerationOptions, Message, ToolCall, ToolSpec, Usage
from kefu.prompts import PromptLibrary
from kefu.shop import ShopProfile
from kefu.understanding.catalogue import IntentCatalogue
from kefu.understanding.types import Entity

log = logging.getLogger(__name__)

START_FLOW = "start_flow"
"""kefu's own tool: hands the turn to a flow (which confirms before it writes anything)."""
_MAX_ARGUMENT_CHARS = 200
_HIDDEN_ARGUMENTS = {"phone"}
_MENTIONED_TYPES = ("product", "color", "size", "quantity", "order_number", "tracking_number", "after_sale_id")
"""Entities worth telling the model about; personal data (phone, e-mail, address) stays out of its prompt."""

Decision = Literal[
    "answered", "start_flow", "not_verified", "ungrounded", "no_answer", "too_many_rounds", "backend_unavailable",
    "llm_error",
]  # fmt: skip


def intent_tools(
    catalogue: IntentCatalogue, actions: Actions, *, source: Path | None = None
) -> dict[str, tuple[ActionSpec, ...]]:
    """Each intent's `tools:`, checked against actions.yaml; a mistake stops start-up with the file and line."""
    known = ", ".join(sorted(actions.specs)) or "none"
    tools: dict[str, tuple[ActionSpec, ...]] = {}
    for i, intent in enumerate(catalogue.intents):
        specs: list[ActionSpec] = []
        for j, name in enumerate(intent.tools):
            spec = actions.get(name)
            if name == START_FLOW:
                problem = f"{START_FLOW!r} is kefu's own tool (offered whenever flows exist), not an action to list"
            elif spec is None:
                problem = f"intent {intent.name!r} names action {name!r}, which actions.yaml does not define ({known})"
            elif spec.writes:
                problem = (
                    f"intent {intent.name!r} names {name!r}, a write action: "
                    "tools may only be read actions; writes go through a flow"
                )
            else:
                specs.append(spec)
                continue
            where = str(source) if source is not None else "intents.yaml"
            line = yaml_line(source, ("intents", i, "tools", j)) if source is not None else None
            raise DataFileError(where, line, f"intents.{i}.tools.{j}: {problem}")
        if specs:
            tools[intent.name] = tuple(specs)
    return tools


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """One customer message for the agent, and what the session knows."""

    intent: str
    text: str
    """The (PII-redacted) message."""
    language: Language
    identity: Identity | None = None
    """The verified customer and orders; the guardrail checks every call against it."""
    entities: Sequence[Entity] = ()
    history: Sequence[Message] = ()
    flow_active: bool = False
    """A flow is waiting for an answer: no other flow may be started from here."""


@dataclass(frozen=True, slots=True)
class AgentCall:
    """One tool call the model asked for, and what became of it (for the turn's trace)."""

    tool: str
    args: dict[str, Any]
    ok: bool
    error_code: str | None = None
    message: str = ""
    status: int | None = None
    attempts: int = 0
    """Backend requests made (0: refused before the backend was asked)."""

    def as_trace(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tool": self.tool, "args": self.args, "ok": self.ok}
        if self.attempts:
            data["status"], data["attempts"] = self.status, self.attempts
        if not self.ok:
            data["error_code"], data["message"] = self.error_code, self.message
        return data


@dataclass(slots=True)
class AgentOutcome:
    """What the agent says (or which flow it starts) and everything it did on the way."""

    decision: Decision = "answered"
    reply: str = ""
    start_flow: str | None = None
    tools: tuple[str, ...] = ()
    """The tools offered to the model."""
    calls: list[AgentCall] = field(default_factory=list)
    rounds: int = 0
    """Model requests made."""
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    prompt: list[Message] = field(default_factory=list)
    """The first request's messages (the output guard checks the reply against its instructions)."""
    error_code: str | None = None
    """Set when the model or the backend failed (the reply is then a fixed apology)."""
    error: str | None = None
    missing_numbers: tuple[str, ...] = ()

    @property
    def resolved(self) -> bool:
        """The customer got an answer or a next step (not an "I can't answer that")."""
        return self.decision in ("answered", "start_flow", "not_verified")

    @property
    def read_anything(self) -> bool:
        """A tool call brought back data from the backend."""
        return any(call.ok and call.tool != START_FLOW for call in self.calls)

    @property
    def defer_to_knowledge(self) -> bool:
        """The agent found nothing and could not answer: the knowledge stages may (a misrouted policy question)."""
        return not self.resolved and self.error_code is None and not self.read_anything

    def as_trace(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "decision": self.decision,
            "tools": list(self.tools),
            "rounds": self.rounds,
            "calls": [c.as_trace() for c in self.calls],
        }
        if self.start_flow:
            data["start_flow"] = self.start_flow
        if self.missing_numbers:
            data["missing_numbers"] = list(self.missing_numbers)
        if self.error_code:
            data["error_code"], data["error"] = self.error_code, self.error
        return data


@dataclass(frozen=True, slots=True)
class _Step:
    """The result of carrying out one tool call: what the model is told, or why the turn stops here."""

    content: str = ""
    start_flow: str | None = None
    refused: IdentityVerdict | None = None
    unavailable: bool = False


class ToolAgent:
    """Answers a turn with the chat model and the read actions its intent allows, under the identity guardrail."""

    def __init__(
        self,
        tools: Mapping[str, tuple[ActionSpec, ...]],
        actions: Actions,
        prompts: PromptLibrary,
        shop: ShopProfile,
        settings: AgentSettings,
        *,
        flows: FlowLibrary | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.actions = actions
        self.prompts = prompts
        self.shop = shop
        self.settings = settings
        self.flows = flows

    def tools_for(self, intent: str | None) -> tuple[ActionSpec, ...]:
        return self.tools.get(intent or "", ())

    async def run(self, request: AgentRequest, llm: LLMBackend) -> AgentOutcome:
        specs = {spec.name: spec for spec in self.tools_for(request.intent)}
        flows = self._startable(request)
        offered = [_tool_spec(spec) for spec in specs.values()]
        if flows:
            offered.append(self._start_flow_spec(flows, request.language))
        system = self._instructions(request, start_flow=bool(flows))
        messages = [Message("system", system), *request.history, Message("user", request.text)]
        outcome = AgentOutcome(tools=tuple(t.name for t in offered), prompt=list(messages))
        rounds = self.settings.max_tool_rounds
        for round_number in range(rounds + 1):
            # The last request offers no tools: whatever was found, the model must now answer.
            tools_now = offered if round_number < rounds else []
            options = GenerationOptions(temperature=self.settings.temperature, tools=tools_now)
            try:
                completion = await llm.complete(messages, options)
            except Exception as exc:  # any model failure ends in the fixed apology, never in the customer's face
                log.warning("tool agent: the model failed (%s)", type(exc).__name__)
                return self._failed(outcome, "llm_error", f"{type(exc).__name__}: {exc}", request.language)
            outcome.rounds += 1
            outcome.model = completion.model
            outcome.usage = Usage(
                outcome.usage.prompt_tokens + completion.usage.prompt_tokens,
                outcome.usage.completion_tokens + completion.usage.completion_tokens,
            )
            if not completion.tool_calls:
                return self._answer(outcome, completion.text, messages, request.language)
            if not tools_now:
                outcome.decision = "too_many_rounds"
                outcome.reply = self.prompts.reply("agent_unsure", request.language)
                return outcome
            messages.append(Message("assistant", completion.text, tool_calls=completion.tool_calls))
            for index, call in enumerate(completion.tool_calls):
                if index >= self.settings.max_calls_per_round:
                    step = self._refuse(outcome, call, "too_many_calls", "only a few tool calls per request")
                else:
                    step = await self._execute(call, specs, flows, request, outcome)
                if step.start_flow is not None:
                    outcome.decision, outcome.start_flow = "start_flow", step.start_flow
                    return outcome
                if step.refused is not None:
                    outcome.decision = "not_verified"
                    outcome.reply = self._not_verified(step.refused, request.language)
                    return outcome
                if step.unavailable:
                    failed = outcome.calls[-1]
                    error = f"{failed.tool}: {failed.error_code} {failed.message}".strip()
                    return self._failed(outcome, "backend_unavailable", error, request.language)
                messages.append(Message("tool", step.content, tool_call_id=call.id))
        raise AssertionError("unreachable: the last round offers no tools")

    # ---- one tool call -------------------------------------------------------------------------------------

    async def _execute(
        self,
        call: ToolCall,
        specs: Mapping[str, ActionSpec],
        flows: Sequence[str],
        request: AgentRequest,
        outcome: AgentOutcome,
    ) -> _Step:
        if call.name == START_FLOW and flows:
            flow = call.arguments.get("flow")
            if not isinstance(flow, str) or flow not in flows:
                return self._refuse(outcome, call, "invalid_arguments", f"flow must be one of: {', '.join(flows)}")
            outcome.calls.append(AgentCall(tool=START_FLOW, args={"flow": flow}, ok=True))
            return _Step(start_flow=flow)
        spec = specs.get(call.name)
        if spec is None:
            action = self.actions.get(call.name)
            message = f"{call.name} is not one of your tools"
            if action is not None and action.writes:
                message += "; changes go through a task the customer confirms" + (" (start_flow)" if flows else "")
            return self._refuse(outcome, call, "tool_not_offered", message)
        args, problem = _arguments(spec, call.arguments)
        if args is None:
            return self._refuse(outcome, call, "invalid_arguments", problem)
        verdict = check_identity(spec, args, request.identity)
        if not verdict.allowed:
            self._refuse(outcome, call, "not_verified", verdict.reason(spec.name), args=args)
            return _Step(refused=verdict)
        result = await self._call(spec, args)
        shown_args = _shown_arguments(args)
        if not result.ok:
            outcome.calls.append(
                AgentCall(
                    spec.name, shown_args, False, result.error_code, result.message, result.status, result.attempts
                )
            )
            if result.unavailable:
                return _Step(unavailable=True)
            return _Step(content=_dumps({"ok": False, "error": result.error_code, "message": result.message}))
        answer = check_answer_identity(result.data, request.identity, owner_field=self._owner_field)
        if not answer.allowed:
            # The answer is dropped unread: it belongs to an order this customer has not been verified for.
            reason = answer.reason(spec.name)
            outcome.calls.append(
                AgentCall(spec.name, shown_args, False, "not_verified", reason, result.status, result.attempts)
            )
            return _Step(refused=answer)
        outcome.calls.append(AgentCall(spec.name, shown_args, True, status=result.status, attempts=result.attempts))
        data = _dumps({"ok": True, "data": _in_language(result.data, request.language)})
        limit = self.settings.max_result_chars
        return _Step(content=data if len(data) <= limit else data[:limit] + "…(cut)")

    async def _call(self, spec: ActionSpec, args: dict[str, Any]) -> ActionResult:
        try:
            return await self.actions.call(spec.name, args)
        except Exception as exc:  # a connector bug is a backend failure to the customer, not a crash
            log.warning("tool agent: action %s raised %s", spec.name, type(exc).__name__)
            return ActionResult(ok=False, error_code="backend_error", message=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _refuse(
        outcome: AgentOutcome, call: ToolCall, code: str, message: str, *, args: Mapping[str, Any] | None = None
    ) -> _Step:
        shown = _shown_arguments(args if args is not None else _plain(call.arguments))
        outcome.calls.append(AgentCall(tool=call.name, args=shown, ok=False, error_code=code, message=message))
        return _Step(content=_dumps({"ok": False, "error": code, "message": message}))

    # ---- the answer ----------------------------------------------------------------------------------------

    def _answer(self, outcome: AgentOutcome, text: str, shown: Sequence[Message], language: Language) -> AgentOutcome:
        answer = text.strip()
        if not answer:
            outcome.decision = "no_answer"
            outcome.reply = self.prompts.reply("agent_unsure", language)
            return outcome
        # The model may only repeat numbers it was shown: stock, prices and dates come from the tools or the policy.
        sources = extract_numbers("\n".join(m.content for m in shown))
        missing = tuple(sorted(extract_numbers(answer) - sources))
        if missing:
            outcome.decision, outcome.missing_numbers = "ungrounded", missing
            outcome.reply = self.prompts.reply("agent_unsure", language)
            return outcome
        outcome.decision, outcome.reply = "answered", answer
        return outcome

    def _not_verified(self, verdict: IdentityVerdict, language: Language) -> str:
        if verdict.field == ORDER_FIELD or (verdict.field is not None and verdict.field != self._owner_field):
            return self.prompts.reply("agent_not_verified_order", language).format(order_id=verdict.value)
        return self.prompts.reply("agent_not_verified", language)

    @property
    def _owner_field(self) -> str:
        return self.flows.identity.owner_field if self.flows is not None else "user_id"

    def _failed(self, outcome: AgentOutcome, code: Decision, error: str, language: Language) -> AgentOutcome:
        outcome.decision, outcome.error_code, outcome.error = code, code, error
        outcome.reply = self.prompts.reply("agent_unavailable", language)
        return outcome

    # ---- what the model is told ----------------------------------------------------------------------------

    def _startable(self, request: AgentRequest) -> list[str]:
        if not self.settings.start_flows or self.flows is None or request.flow_active:
            return []
        return list(self.flows.flows)

    def _start_flow_spec(self, flows: Sequence[str], language: Language) -> ToolSpec:
        assert self.flows is not None
        listing = "; ".join(f"{name}: {self.flows.flows[name].description.pick(language)}" for name in flows)
        return ToolSpec(
            START_FLOW,
            "Start a guided task for the customer (it asks for anything missing, verifies the customer and asks "
            f"them to confirm before anything is changed). Tasks: {listing}",
            {
                "type": "object",
                "properties": {"flow": {"type": "string", "enum": list(flows)}},
                "required": ["flow"],
                "additionalProperties": False,
            },
        )

    def _instructions(self, request: AgentRequest, *, start_flow: bool) -> str:
        language = request.language
        policy = self.shop.policy_summary.pick(language) if self.shop.policy_summary is not None else None
        identity = request.identity
        return self.prompts.render(
            "agent",
            shop=self.shop,
            language=language,
            policy=policy,
            start_flow=start_flow,
            orders=list(identity.orders) if identity is not None else [],
            mentioned=_mentioned(request.entities, language),
        )


def _tool_spec(spec: ActionSpec) -> ToolSpec:
    description = spec.description or spec.name.replace("_", " ")
    if spec.identity_params:
        description += f" Only for orders verified as this customer's ({', '.join(spec.identity_params)})."
    return ToolSpec(
        spec.name,
        description,
        {
            "type": "object",
            "properties": {name: {"type": "string"} for name in spec.params},
            "required": list(spec.required),
            "additionalProperties": False,
        },
    )


def _arguments(spec: ActionSpec, given: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The call's arguments as short strings, or why they are not acceptable."""
    if not isinstance(given, Mapping):
        return None, "arguments must be a JSON object"
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        return None, f"unknown argument(s) {', '.join(unknown)}; {spec.name} takes {', '.join(spec.params) or 'none'}"
    args: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None, f"{name} must be a string"
        text = str(value).strip()
        if len(text) > _MAX_ARGUMENT_CHARS:
            return None, f"{name} is too long"
        if text:
            args[name] = text
    missing = [p for p in spec.required if p not in args]
    if missing:
        return None, f"missing argument(s) {', '.join(missing)}"
    return args, ""


def _plain(arguments: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(arguments, Mapping):
        return {"(not an object)": str(arguments)[:_MAX_ARGUMENT_CHARS]}
    return {str(k): v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in arguments.items()}


def _shown_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as the trace keeps them: a phone number is never stored."""
    return {k: ("***" if k in _HIDDEN_ARGUMENTS else v) for k, v in args.items()}


def _in_language(value: Any, language: Language) -> Any:
    """A backend answer without the other language's fields (`name_en` for a Chinese conversation): half the tokens."""
    other = "_en" if language == "zh" else "_zh"
    if isinstance(value, dict):
        return {k: _in_language(v, language) for k, v in value.items() if not str(k).endswith(other)}
    if isinstance(value, list):
        return [_in_language(v, language) for v in value]
    return value


def _mentioned(entities: Sequence[Entity], language: Language) -> list[str]:
    lines = []
    for entity in entities:
        if entity.type not in _MENTIONED_TYPES:
            continue
        line = f"{entity.type}: {entity.value}"
        if entity.type == "product":
            name = entity.attrs.get("name_zh" if language == "zh" else "name_en")
            if name:
                line += f" ({name})"
            others = [c for c in entity.attrs.get("candidates", ()) if c != entity.value]
            if others:
                line += f"; or one of {', '.join(others)}"
        lines.append(line)
    return lines


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
