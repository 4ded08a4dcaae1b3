"""The typed verdict every guard returns; the pipeline turns a tripped one into a fixed reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """What a guard decided about one text, and why (reasons never quote the text itself)."""

    tripped: bool
    kind: str | None = None
    """injection · sensitive_word · too_long · control_chars · gibberish · pii_leak · prompt_leak ·
    policy_promise · ungrounded."""
    reasons: tuple[str, ...] = ()
    score: float = 0.0
    reply_key: str | None = None
    """The fixed reply (prompts/replies.yaml) the customer gets when the guard trips."""
    handoff: bool = False

    def as_trace(self) -> dict[str, Any]:
        return {
            "tripped": self.tripped,
            "kind": self.kind,
            "reasons": list(self.reasons),
            "score": round(self.score, 3),
        }


PASSED = GuardVerdict(tripped=False)
