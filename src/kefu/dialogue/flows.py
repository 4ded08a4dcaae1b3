"""Flows as data: `flows/*.yaml` (slots, steps, branches, confirmations, actions) loaded and validated.

A mistake in a flow file is reported with its file and line (DataFileError); a flow that names an
unknown action, slot, step or entity type is rejected at start-up, not when a customer reaches it.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kefu.connectors import Actions
from kefu.datafiles import load_yaml_model, yaml_line
from kefu.dialogue.templates import FlowTemplates
from kefu.errors import DataFileError
from kefu.shop import Bilingual
from kefu.understanding.catalogue import PerLanguage
from kefu.understanding.types import ENTITY_TYPES

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
STEP_KINDS = ("collect", "verify", "call", "branch", "confirm", "set_", "reply", "handoff")
_PRIMARY = ("collect", "verify", "call", "branch", "confirm", "set_")
COMMANDS_FILE = Path(__file__).parent / "data" / "commands.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_bilingual(value: Bilingual | None) -> Bilingual | None:
    if value is not None:
        FlowTemplates.check_template(value.zh)
        FlowTemplates.check_template(value.en)
    return value


class SlotSpec(_Strict):
    """A value the flow needs from the customer, how to recognise it and how to ask for it."""

    entity: str | list[str] | None = None
    """An entity type from understanding (order_number, phone, size, color…), or several (`slot_types` tells
    templates which one the customer gave)."""
    pattern: str | None = None
    """A regular expression on the message; group 1 (or the whole match) is the value."""
    choices: dict[str, PerLanguage] | None = None
    """value → phrases that mean it; a phrase anywhere in the message selects the value."""
    free_text: bool = False
    """Take the whole message (a reason, an invoice title) when nothing else recognises it."""
    prompt: Bilingual
    invalid: Bilingual | None = None
    """Said before the prompt again when the answer was not recognised."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Unrecognised answers before the flow gives up and hands the customer to a person."""
    validate_: str | None = Field(default=None, alias="validate")
    """A condition the value must meet (`value` is the candidate), else it counts as not recognised."""

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, value: str | list[str] | None) -> str | list[str] | None:
        for kind in [value] if isinstance(value, str) else value or []:
            if kind not in ENTITY_TYPES:
                raise ValueError(f"unknown entity type {kind!r}; known: {', '.join(ENTITY_TYPES)}")
        return value

    @property
    def entity_types(self) -> tuple[str, ...]:
        if self.entity is None:
            return ()
        return (self.entity,) if isinstance(self.entity, str) else tuple(self.entity)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("prompt", "invalid")
    @classmethod
    def _templates(cls, value: Bilingual | None) -> Bilingual | None:
        return _check_bilingual(value)

    @field_validator("validate_")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            FlowTemplates.check_expression(value)
        return value

    @model_validator(mode="after")
    def _recognisable(self) -> Self:
        if not (self.entity or self.pattern or self.choices or self.free_text):
            raise ValueError("a slot needs entity, pattern, choices or free_text")
        return self


class Outcome(_Strict):
    """What happens next: say something, then go to a step, end the flow or hand off."""

    reply: Bilingual | None = None
    goto: str | None = None
    end: bool = False
    handoff: str | None = None
    """A handoff reason (recorded on the ticket); ends the flow and brings in a person."""
    clear: list[str] = Field(default_factory=list)
    """Slots to forget (the customer is asked for them again)."""

    @field_validator("reply")
    @classmethod
    def _templates(cls, value: Bilingual | None) -> Bilingual | None:
        return _check_bilingual(value)


class Branch(Outcome):
    """One arm of a branch step: taken when its condition holds."""

    if_: str = Field(alias="if")

    @field_validator("if_")
    @classmethod
    def _condition(cls, value: str) -> str:
        FlowTemplates.check_expression(value)
        return value


class Step(_Strict):
    """One step of a flow; exactly one of collect, verify, call, branch, confirm, reply, handoff."""

    id: str
    when: str | None = None
    """Skip the step unless this condition holds."""
    collect: str | None = None
    verify: str | None = None
    """The slot holding an order number the customer must be shown to own before the flow goes on."""
    call: str | None = None
    with_: dict[str, str] = Field(default_factory=dict, alias="with")
    """Action arguments as templates (`{{ slots.order_id }}`)."""
    save_as: str | None = None
    on_error: dict[str, Outcome] = Field(default_factory=dict)
    """Backend error code → outcome; `default` catches the rest (else: apology and handoff)."""
    branch: list[Branch] | None = None
    confirm: Bilingual | None = None
    on_decline: Outcome | None = None
    reply: Bilingual | None = None
    handoff: str | None = None
    set_: dict[str, str] = Field(default_factory=dict, alias="set")
    """Slots to fill from templates (`order_id: "{{ shipment.order_id }}"`)."""
    goto: str | None = None
    end: bool = False

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("step ids are snake_case")
        return value

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            FlowTemplates.check_expression(value)
        return value

    @field_validator("with_", "set_")
    @classmethod
    def _arguments(cls, value: dict[str, str]) -> dict[str, str]:
        for source in value.values():
            FlowTemplates.check_template(source)
        return value

    @field_validator("confirm", "reply")
    @classmethod
    def _templates(cls, value: Bilingual | None) -> Bilingual | None:
        return _check_bilingual(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        primary = [k.rstrip("_") for k in _PRIMARY if getattr(self, k)]
        if len(primary) > 1 or not (primary or self.reply or self.handoff):
            raise ValueError(
                f"step {self.id!r} must do one of {'/'.join(k.rstrip('_') for k in _PRIMARY)} "
                f"(a reply or handoff may follow a branch or set), found {primary or 'nothing'}"
            )
        if primary and primary[0] not in ("branch", "set") and (self.reply or self.handoff):
            raise ValueError(f"step {self.id!r}: reply/handoff go in their own step, not with {primary[0]}")
        if self.with_ and not self.call:
            raise ValueError(f"step {self.id!r}: 'with' belongs to a call step")
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k in ("collect", "verify", "call", "branch", "confirm", "reply", "handoff") if getattr(self, k)
        )

    @property
    def writes_hint(self) -> bool:
        return self.call is not None


class Trigger(_Strict):
    """Starts the flow for an intent, optionally only when the message names one of some entity types or uses
    one of some words (a request, "帮我开发票", rather than a question about the policy, "发票能写办公用品吗")."""

    intent: str
    entities_any: list[str] = Field(default_factory=list)
    words_any: PerLanguage | None = None
    """Phrases of either language, matched case-insensitively anywhere in the message (English on word edges)."""

    def matches(self, intent: str, entity_types: set[str], text: str) -> bool:
        if intent != self.intent:
            return False
        if self.entities_any and not entity_types.intersection(self.entities_any):
            return False
        if self.words_any is None:
            return True
        lowered = unicodedata.normalize("NFKC", text).lower()
        for phrase in self.words_any.all():
            word = phrase.lower()
            if word.isascii() and re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", lowered):
                return True
            if not word.isascii() and word in lowered:
                return True
        return False


class Flow(_Strict):
    """A scripted task: the slots it needs and the steps that get it done."""

    name: str
    description: Bilingual
    triggers: list[Trigger] = Field(min_length=1)
    priority: int = Field(default=50, ge=0, le=100)
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    resume: Bilingual | None = None
    """Said when the customer comes back to the flow after a digression (default: the pending question)."""

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("flow names are snake_case")
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [s.id for s in self.steps]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"step id(s) {sorted(duplicates)} used twice")
        known = set(ids)
        for step in self.steps:
            for slot in (step.collect, step.verify, *step.set_):
                if slot is not None and slot not in self.slots:
                    raise ValueError(f"step {step.id!r} uses slot {slot!r}, which is not declared under slots")
            outcomes: list[Outcome] = [*(step.branch or []), *step.on_error.values()]
            if step.on_decline is not None:
                outcomes.append(step.on_decline)
            targets = [step.goto, *(o.goto for o in outcomes)]
            for target in targets:
                if target is not None and target not in known:
                    raise ValueError(f"step {step.id!r} goes to {target!r}, which is not a step of this flow")
            for outcome in outcomes:
                unknown = set(outcome.clear) - set(self.slots)
                if unknown:
                    raise ValueError(f"step {step.id!r} clears unknown slot(s) {sorted(unknown)}")
        return self

    def step_index(self, step_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == step_id)

    def collect_step(self, slot: str) -> str | None:
        return next((s.id for s in self.steps if s.collect == slot or s.verify == slot), None)


class FlowFile(_Strict):
    definitions: dict[str, Any] = Field(default_factory=dict)
    """Free-form YAML anchors shared by the flows of one file (`&order_slot` … `*order_slot`)."""
    flows: list[Flow] = Field(min_length=1)


class Commands(_Strict):
    """Whole-message replies that cancel a flow, confirm or decline a step, or correct a slot."""

    cancel: PerLanguage
    confirm: PerLanguage
    decline: PerLanguage
    correction_cues: PerLanguage = Field(default_factory=PerLanguage)
    policy_questions: PerLanguage = Field(default_factory=PerLanguage)
    """How a message that asks about the shop's rules starts ("你们支持…", "do you…"): without an order number it
    is answered from knowledge instead of starting a task."""

    def asks_about_policy(self, text: str) -> bool:
        lowered = unicodedata.normalize("NFKC", text).strip().lower()
        return any(lowered.startswith(p.lower()) for p in self.policy_questions.all())


class IdentitySettings(_Strict):
    """How a customer proves an order is theirs before kefu reveals or changes anything about it."""

    verify_action: str = "verify_identity"
    """Called with order_id and phone; answers `verified` and `user_id`."""
    order_action: str = "get_order"
    """Called with order_id when the customer is already verified; its `user_id` must match."""
    owner_field: str = "user_id"
    prompt: Bilingual = Bilingual(
        zh="为了保护您的隐私，请提供下单时使用的手机号（或手机号后四位）。",
        en="To protect your privacy, please give the phone number used for the order (or its last 4 digits).",
    )
    mismatch: Bilingual = Bilingual(
        zh="手机号与订单信息不一致。",
        en="That phone number does not match the order.",
    )
    not_owner: Bilingual = Bilingual(
        zh="订单 {{ order_id }} 不属于已验证的账户，我无法查看或办理。请确认订单号。",
        en="Order {{ order_id }} does not belong to the verified account, so I can't view or change it. "
        "Please check the order number.",
    )
    max_attempts: int = Field(default=3, ge=1, le=10)


class DialogueFile(_Strict):
    """Optional `flows/dialogue.yaml`: identity verification settings and command words."""

    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    commands: Commands | None = None


class FlowLibrary:
    """Every flow of the shop, the command words, and which flow an intent starts."""

    def __init__(self, flows: dict[str, Flow], commands: Commands, identity: IdentitySettings) -> None:
        self.flows = flows
        self.commands = commands
        self.identity = identity
        self._triggers: dict[str, list[tuple[Flow, Trigger]]] = {}
        """Each intent's triggers, in the flows' order (asked on every turn with an intent)."""
        for flow in flows.values():
            for trigger in flow.triggers:
                self._triggers.setdefault(trigger.intent, []).append((flow, trigger))

    def get(self, name: str) -> Flow | None:
        return self.flows.get(name)

    def for_intent(self, intent: str | None, entity_types: set[str], text: str = "") -> Flow | None:
        """The flow this intent starts: one whose trigger's conditions hold, the most specific and then the highest
        priority first."""
        if intent is None:
            return None
        best: tuple[int, int, Flow] | None = None
        for flow, trigger in self._triggers.get(intent, ()):
            if not trigger.matches(intent, entity_types, text):
                continue
            rank = (1 if trigger.entities_any or trigger.words_any else 0, flow.priority, flow)
            if best is None or rank[:2] > best[:2]:
                best = rank
        return best[2] if best is not None else None


def load_flows(directory: Path, actions: Actions | None) -> FlowLibrary:
    """Load every `*.yaml` flow file of `directory` and check it against the actions; errors name file and line."""
    flows: dict[str, Flow] = {}
    settings = DialogueFile()
    commands_path = directory / "commands.yaml"
    commands = load_yaml_model(commands_path if commands_path.is_file() else COMMANDS_FILE, Commands)
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "commands.yaml":
            continue
        if path.name == "dialogue.yaml":
            settings = load_yaml_model(path, DialogueFile)
            continue
        for index, flow in enumerate(load_yaml_model(path, FlowFile).flows):
            if flow.name in flows:
                line = yaml_line(path, ("flows", index, "name"))
                raise DataFileError(str(path), line, f"flow {flow.name!r} is defined twice")
            _check_actions(path, index, flow, actions)
            flows[flow.name] = flow
    if settings.commands is not None:
        commands = settings.commands
    if actions is not None and flows:
        for name in (settings.identity.verify_action, settings.identity.order_action):
            if actions.get(name) is None and any(s.verify for f in flows.values() for s in f.steps):
                raise DataFileError(str(directory / "dialogue.yaml"), None, f"identity action {name!r} is not defined")
    return FlowLibrary(flows, commands, settings.identity)


def _check_actions(path: Path, index: int, flow: Flow, actions: Actions | None) -> None:
    if actions is None:
        return
    for number, step in enumerate(flow.steps):
        if step.call is None:
            continue
        where = ("flows", index, "steps", number)
        spec = actions.get(step.call)
        if spec is None:
            known = ", ".join(sorted(actions.specs))
            message = f"flow {flow.name!r} step {step.id!r} calls unknown action {step.call!r}; known: {known}"
            raise DataFileError(str(path), yaml_line(path, (*where, "call")), message)
        missing = set(spec.required) - set(step.with_)
        if missing:
            message = f"flow {flow.name!r} step {step.id!r}: action {step.call!r} needs {sorted(missing)} in 'with'"
            raise DataFileError(str(path), yaml_line(path, (*where, "with")), message)


def flow_variables_doc() -> dict[str, Any]:
    """What templates and conditions can read (docs/flows.md lists the same)."""
    return {
        "slots": "collected slot values",
        "<save_as>": "results of earlier call steps",
        "identity": "the verified customer ({user_id}) or null",
        "now": "the current time (timezone-aware datetime)",
        "policy": "the shop's policies from shop.yaml",
        "lang": "'zh' or 'en'",
        "error": "the failed action's {code, message} (in on_error)",
    }
