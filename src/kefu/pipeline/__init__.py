"""The turn pipeline: a runner chaining stages over one per-turn context."""

from kefu.pipeline.context import Citation, SilentEvents, TurnContext, TurnEvents, TurnInput
from kefu.pipeline.deps import TurnDeps
from kefu.pipeline.runner import TurnResult, TurnRunner

__all__ = [
    "Citation",
    "SilentEvents",
    "TurnContext",
    "TurnDeps",
    "TurnEvents",
    "TurnInput",
    "TurnResult",
    "TurnRunner",
]
