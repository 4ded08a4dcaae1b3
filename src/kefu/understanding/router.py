"""The router: (intent, confidence, entities, emotion, dialogue state) → a handler, with the reasons recorded.

Handoff competes with the intent's own handler on one scale: the intent scores its confidence (times a
small priority bonus), handoff scores the weighted evidence that a person should take over — anger,
negativity, urgency, earlier unhappy turns and failed replies. An angry customer therefore reaches a
human faster than a calm one asking the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kefu.understanding.catalogue import Handler, IntentCatalogue
from kefu.understanding.types import DialogueState, Emotion, Entity, IntentDecision, RouteDecision

OOS_HANDLER = "oos"
_ANSWERED_FROM_KNOWLEDGE = frozenset({Handler.FAQ.value, Handler.KNOWLEDGE.value})
"""Handlers whose reply does not depend on the intent: the knowledge stage answers the question itself."""


@dataclass(frozen=True, slots=True)
class RouterWeights:
    """How much each signal pushes a turn towards a human; see docs/intents.md for tuning."""

    handoff_threshold: float = 1.0
    """Escalate when the handoff score reaches this and beats the intent's own score."""
    angry: float = 0.9
    negative: float = 0.3
    urgent: float = 0.2
    negative_streak: float = 0.3
    """Per earlier consecutive negative turn."""
    failed_replies: float = 0.25
    """Per earlier bot reply that ended in an error."""
    priority_bonus: float = 0.002
    """Per priority point: breaks near-ties between intents towards the more important handler."""


class Router:
    """Chooses the handler of a turn and says why."""

    def __init__(self, catalogue: IntentCatalogue | None, weights: RouterWeights | None = None) -> None:
        self.catalogue = catalogue
        self.weights = weights or RouterWeights()

    def handled_alike(self, ranked: Sequence[tuple[str, float]], mass: float) -> tuple[str, ...]:
        """The most likely intents, best first, until their probabilities add up to `mass`, when every one of them
        is answered from knowledge; () when they are not, or when they never add up to it.

        The classifier is unsure between "满多少包邮" as `shipping_policy` or `shipping_fee`, but both are answered by
        the knowledge stage from the same question: asking the LLM which it is would not change the reply. With
        `mass` the accept threshold, the right intent is among them as often as a confident guess is right.
        """
        if self.catalogue is None:
            return ()
        chosen: list[str] = []
        total = 0.0
        for label, probability in ranked:
            spec = self.catalogue.get(label)
            if spec is None or spec.handler.value not in _ANSWERED_FROM_KNOWLEDGE:
                return ()  # out of scope, or a flow, an agent, a person: the intent decides what happens
            chosen.append(label)
            total += probability
            if total >= mass:
                return tuple(chosen)
        return ()

    def route(
        self, decision: IntentDecision, entities: Sequence[Entity], emotion: Emotion, state: DialogueState
    ) -> RouteDecision:
        w = self.weights
        reasons: list[str] = []
        scores: dict[str, float] = {}
        spec = self.catalogue.get(decision.intent) if self.catalogue and decision.intent else None

        escalation = 0.0
        parts: list[str] = []
        if emotion.label == "angry":
            escalation += w.angry * max(emotion.score, 0.5)
            parts.append(f"angry {emotion.score:.2f}")
        elif emotion.label == "negative":
            escalation += w.negative * max(emotion.score, 0.5)
            parts.append(f"negative {emotion.score:.2f}")
        if emotion.urgent:
            escalation += w.urgent
            parts.append("urgent")
        if state.negative_streak:
            escalation += w.negative_streak * state.negative_streak
            parts.append(f"{state.negative_streak} unhappy turn(s) before")
        if state.failed_replies:
            escalation += w.failed_replies * state.failed_replies
            parts.append(f"{state.failed_replies} failed repl(ies) before")
        scores["handoff_escalation"] = escalation

        if decision.out_of_scope:
            handler = OOS_HANDLER
            scores[OOS_HANDLER] = decision.confidence
            reasons.append(f"out of scope ({decision.stage}, confidence {decision.confidence:.2f})")
        elif spec is not None:
            handler = spec.handler.value
            intent_score = decision.confidence * (1 + w.priority_bonus * spec.priority)
            scores[handler] = intent_score
            how = f"rule '{decision.rule}'" if decision.stage == "rules" else decision.stage
            reasons.append(f"intent {spec.name} → {handler} ({how}, confidence {decision.confidence:.2f})")
            if decision.needed_llm and decision.stage == "classifier":
                reasons.append("classifier unsure; no LLM verdict, kept its best guess")
                if handler == Handler.HANDOFF.value:
                    # Transferring someone who did not ask for it is worse than answering: only rules, a
                    # confident classifier or the LLM may hand off on intent alone.
                    handler = Handler.KNOWLEDGE.value
                    scores[handler] = scores.pop(Handler.HANDOFF.value)
                    reasons.append("too unsure to hand off on intent alone: answered instead")
        else:
            handler = Handler.KNOWLEDGE.value
            scores[handler] = 0.0
            reasons.append("no intent catalogue: answered from knowledge")

        if handler != Handler.HANDOFF.value and escalation >= w.handoff_threshold:
            intent_score = scores.get(handler, 0.0)
            reasons.append(
                f"escalated to a human: handoff score {escalation:.2f} ≥ {w.handoff_threshold:g} "
                f"({', '.join(parts)}) over {handler} {intent_score:.2f}"
            )
            handler = Handler.HANDOFF.value
        elif parts:
            reasons.append(f"customer mood: {', '.join(parts)} (handoff score {escalation:.2f})")

        missing: tuple[str, ...] = ()
        if spec is not None and spec.requires_any and handler == spec.handler.value:
            kinds = {e.type for e in entities}
            if not kinds.intersection(spec.requires_any):
                missing = tuple(spec.requires_any)
                reasons.append(f"needs one of {', '.join(missing)} from the customer")
        if state.owner == "human":
            reasons.append("a human agent owns this session")
        return RouteDecision(handler=handler, reasons=tuple(reasons), scores=scores, missing=missing)
