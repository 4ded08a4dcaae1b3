"""kefu's own LLM message and result types; vendor formats stay inside the adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
LLMRole = Literal["chat", "classification", "rewrite"]
"""What a model is used for; config may point each role at a different backend or model."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message in a prompt or a reply."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call, described by a JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Per-call generation settings; None means the backend's configured default."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: Sequence[str] = ()
    json_schema: Mapping[str, Any] | None = None
    """Constrain the reply to JSON matching this schema."""
    tools: Sequence[ToolSpec] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported by the backend."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished model answer."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed text."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The last stream event: the whole completion, usage included."""

    completion: Completion


StreamEvent = TextDelta | StreamDone
