"""LLM backends behind one interface (`LLMBackend`) over kefu's own message types."""

from kefu.llm.base import LLMBackend
from kefu.llm.types import (
    Completion,
    GenerationOptions,
    LLMRole,
    Message,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "Completion",
    "GenerationOptions",
    "LLMBackend",
    "LLMRole",
    "Message",
    "StreamDone",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
