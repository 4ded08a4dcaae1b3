"""Understanding the customer: intent, out-of-scope, entities, emotion, language and routing in one call."""

from kefu.understanding.catalogue import Handler, IntentCatalogue, IntentSpec, load_catalogue
from kefu.understanding.service import Understanding, UnderstandingConfig
from kefu.understanding.types import (
    OOS_LABEL,
    DialogueState,
    Emotion,
    Entity,
    IntentDecision,
    RouteDecision,
    UnderstandingResult,
)

__all__ = [
    "OOS_LABEL",
    "DialogueState",
    "Emotion",
    "Entity",
    "Handler",
    "IntentCatalogue",
    "IntentDecision",
    "IntentSpec",
    "RouteDecision",
    "Understanding",
    "UnderstandingConfig",
    "UnderstandingResult",
    "load_catalogue",
]
