"""Service analytics for operators: resolution, handoffs, satisfaction, intents, gaps, handling time and cost."""

from kefu.analytics.report import (
    ArmReport,
    Csat,
    Handling,
    IntentCount,
    ModelUsage,
    QuestionCount,
    ReasonCount,
    ServiceAnalytics,
    ServiceReport,
    Thumbs,
    Usage,
)

__all__ = [
    "ArmReport",
    "Csat",
    "Handling",
    "IntentCount",
    "ModelUsage",
    "QuestionCount",
    "ReasonCount",
    "ServiceAnalytics",
    "ServiceReport",
    "Thumbs",
    "Usage",
]
