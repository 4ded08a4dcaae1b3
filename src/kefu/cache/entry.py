"""One cached answer: the reply and its citations as the customer saw them, with what it answered."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ENTRY_OVERHEAD_BYTES = 256
"""Bookkeeping counted per entry on top of its serialised size (keys, indexes)."""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A reply that used no customer's data, kept to be served again in the same namespace."""

    reply: str
    citations: list[dict[str, Any]]
    intent: str | None
    route: str
    """How it was first answered: `faq` (a curated answer) or `knowledge` (a grounded model answer)."""
    language: str
    question: str
    """The question it answered (redacted text: a turn with personal data is never cached)."""
    knowledge_version: int
    model: str | None = None
    """The model that wrote it (None for a curated answer)."""
    passages: list[str] = field(default_factory=list)
    """A model answer's passages (chunk ids, best first): a paraphrase must be answered from the same ones."""
    terms: list[str] = field(default_factory=list)
    """The question's search terms, compared with a paraphrase's on the words the passages talk about."""
    created_at: float = field(default_factory=time.time)

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes | str) -> CachedAnswer:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            reply=str(raw["reply"]),
            citations=list(raw.get("citations") or []),
            intent=raw.get("intent"),
            route=str(raw["route"]),
            language=str(raw["language"]),
            question=str(raw.get("question", "")),
            knowledge_version=int(raw["knowledge_version"]),
            model=raw.get("model"),
            passages=[str(p) for p in raw.get("passages") or []],
            terms=[str(t) for t in raw.get("terms") or []],
            created_at=float(raw.get("created_at", 0.0)),
        )

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.created_at)
