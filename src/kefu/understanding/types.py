"""What understanding produces for one turn: intent, entities, emotion, language and the routing decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kefu.language import Language, LanguageMix

ENTITY_TYPES = (
    "order_number",
    "tracking_number",
    "after_sale_id",
    "phone",
    "email",
    "date",
    "amount",
    "quantity",
    "product",
    "color",
    "size",
    "address",
)
"""Every entity type understanding extracts; intents.yaml may name these in `requires`."""

OOS_LABEL = "oos"
"""The label of out-of-scope turns, in results, training data and evaluation files."""

Stage = Literal["rules", "classifier", "llm", "none"]
EmotionLabel = Literal["neutral", "positive", "negative", "angry"]


@dataclass(frozen=True, slots=True)
class Entity:
    """A concrete thing the customer mentioned, with its normalised value.

    `value` is always a string in a canonical form (ISO date, E.164 phone, upper-case order number,
    SKU, "299.00"); `attrs` holds the rest (currency, carrier, colour family, candidates).
    """

    type: str
    value: str
    text: str
    start: int = -1
    end: int = -1
    source: Literal["text", "context"] = "text"
    """`context`: resolved from earlier messages ("the second one", "那个蓝色的")."""
    confidence: float = 1.0
    attrs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "value": self.value, "text": self.text}
        if self.start >= 0:
            data["span"] = [self.start, self.end]
        if self.source != "text":
            data["source"] = self.source
        if self.confidence < 1.0:
            data["confidence"] = round(self.confidence, 3)
        if self.attrs:
            data["attrs"] = self.attrs
        return data


@dataclass(frozen=True, slots=True)
class Emotion:
    """How the customer feels and whether they are in a hurry."""

    label: EmotionLabel = "neutral"
    score: float = 0.0
    """Strength of the label, 0..1 (0 for neutral)."""
    urgent: bool = False
    cues: tuple[str, ...] = ()
    """Lexicon words that fired, for the operator."""

    @property
    def negative(self) -> bool:
        return self.label in ("negative", "angry")

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 3), "urgent": self.urgent, "cues": list(self.cues)}


@dataclass(frozen=True, slots=True)
class IntentScore:
    """One candidate intent and its calibrated probability."""

    intent: str
    score: float


@dataclass(frozen=True, slots=True)
class IntentDecision:
    """Which intent a turn has, how sure we are, and which stage decided it."""

    intent: str | None
    """An intent name, `oos` (out of scope), or None when no catalogue is loaded."""
    confidence: float
    stage: Stage
    candidates: tuple[IntentScore, ...] = ()
    reason: str = ""
    rule: str | None = None
    """The keyword or pattern that fired, when the rules decided."""
    needed_llm: bool = False
    """The classifier was unsure, so the LLM fallback was (or would have been) asked."""
    alike: tuple[str, ...] = ()
    """The classifier was unsure between these intents, but all are answered from knowledge, so it kept its best
    guess without asking the LLM (see `Router.handled_alike`)."""

    @property
    def out_of_scope(self) -> bool:
        return self.intent == OOS_LABEL

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "intent": self.intent,
            "confidence": round(self.confidence, 4),
            "stage": self.stage,
            "candidates": [{"intent": c.intent, "score": round(c.score, 4)} for c in self.candidates],
            "reason": self.reason,
            "needed_llm": self.needed_llm,
        }
        if self.rule is not None:
            data["rule"] = self.rule
        if self.alike:
            data["alike"] = list(self.alike)
        return data


@dataclass(frozen=True, slots=True)
class DialogueState:
    """What earlier turns of the session tell the router."""

    turns: int = 0
    """Customer messages before this one."""
    negative_streak: int = 0
    """Consecutive earlier customer turns recorded as negative or angry."""
    previous_intent: str | None = None
    previous_route: str | None = None
    failed_replies: int = 0
    """Earlier bot replies that ended in an error."""
    owner: str = "bot"
    """Who answers the session: 'bot' or 'human'."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a turn goes and why, as recorded for the operator."""

    handler: str
    """A handler kind (see `Handler`), or 'oos' / 'clarify'."""
    reasons: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    """Entity types the chosen intent requires but the customer has not given."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "reasons": list(self.reasons),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "missing": list(self.missing),
        }


@dataclass(frozen=True, slots=True)
class UnderstandingResult:
    """Everything understanding learnt about one customer message."""

    text: str
    language: Language
    """The language to reply in."""
    language_mix: LanguageMix | None
    intent: IntentDecision
    entities: tuple[Entity, ...]
    emotion: Emotion
    route: RouteDecision
    latency_ms: dict[str, float] = field(default_factory=dict)
    semantic_text: str | None = None
    """The text whose embedding classified the intent: the message without order, after-sale and tracking numbers
    (None when nothing was embedded). Retrieval and the answer cache embed the same text, so one turn embeds once."""

    def entities_of(self, kind: str) -> list[Entity]:
        return [e for e in self.entities if e.type == kind]

    def as_trace(self) -> dict[str, Any]:
        """The JSON stored on the reply (messages.metadata) and shown by the admin API."""
        return {
            **self.intent.as_dict(),
            "language": self.language,
            "language_mix": self.language_mix,
            "entities": [e.as_dict() for e in self.entities],
            "emotion": self.emotion.as_dict(),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }
