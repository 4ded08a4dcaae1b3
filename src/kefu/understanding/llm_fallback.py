"""Stage 3: ask the classification LLM, constrained to a JSON schema, when the classifier is unsure."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kefu.errors import LLMError, LLMResponseError
from kefu.llm.base import LLMBackend
from kefu.llm.types import GenerationOptions, Message
from kefu.prompts import PromptLibrary
from kefu.understanding.catalogue import IntentCatalogue
from kefu.understanding.types import OOS_LABEL

log = logging.getLogger(__name__)
_CONTEXT_MESSAGES = 4
_CONTEXT_CHARS = 200


@dataclass(frozen=True, slots=True)
class LLMVerdict:
    """The model's choice; `error` says why there is none (timeout, bad JSON, backend down)."""

    intent: str | None
    confidence: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    description: str


class LLMIntentFallback:
    """Classifies over the catalogue's top candidates with names, descriptions and a few retrieved examples."""

    def __init__(
        self, catalogue: IntentCatalogue, prompts: PromptLibrary, *, timeout_s: float = 8.0, max_candidates: int = 8
    ) -> None:
        self.catalogue = catalogue
        self.prompts = prompts
        self.timeout_s = timeout_s
        self.max_candidates = max_candidates

    def messages(
        self,
        text: str,
        candidates: Sequence[str],
        examples: Sequence[tuple[str, str]],
        history: Sequence[Message],
        language: str,
    ) -> list[Message]:
        intents = []
        for name in candidates[: self.max_candidates]:
            spec = self.catalogue.get(name)
            if spec is not None:
                description = spec.description.zh if language == "zh" else spec.description.en
                intents.append(_Candidate(name, description))
        context = [
            (m.role, m.content[:_CONTEXT_CHARS])
            for m in history[-_CONTEXT_MESSAGES:]
            if m.role in ("user", "assistant")
        ]
        system = self.prompts.render("intent_classify", intents=intents, examples=examples, context=context)
        return [Message("system", system), Message("user", text)]

    def schema(self, candidates: Sequence[str]) -> dict[str, object]:
        names = [*[c for c in candidates[: self.max_candidates] if self.catalogue.get(c)], OOS_LABEL]
        return {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": names},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["intent", "confidence"],
            "additionalProperties": False,
        }

    async def classify(
        self,
        llm: LLMBackend,
        text: str,
        candidates: Sequence[str],
        examples: Sequence[tuple[str, str]],
        history: Sequence[Message],
        language: str,
    ) -> LLMVerdict:
        schema = self.schema(candidates)
        options = GenerationOptions(max_tokens=40, temperature=0.0, json_schema=schema)
        try:
            completion = await asyncio.wait_for(
                llm.complete(self.messages(text, candidates, examples, history, language), options), self.timeout_s
            )
            return self._parse(completion.text, schema)
        except TimeoutError:
            return LLMVerdict(None, 0.0, f"no answer within {self.timeout_s:g}s")
        except LLMError as exc:
            # A failing fallback must not fail the turn: the classifier's answer stands.
            log.warning("intent fallback LLM failed: %s", exc.code)
            return LLMVerdict(None, 0.0, exc.code)

    @staticmethod
    def _parse(raw: str, schema: dict[str, object]) -> LLMVerdict:
        try:
            data = json.loads(raw.strip().removeprefix("```json").removesuffix("```").strip())
            intent = data["intent"]
            confidence = float(data.get("confidence", 0.5))
        except (ValueError, KeyError, TypeError, AttributeError):
            return LLMVerdict(None, 0.0, LLMResponseError.code)
        allowed = schema["properties"]["intent"]["enum"]  # type: ignore[index]
        if intent not in allowed:
            return LLMVerdict(None, 0.0, LLMResponseError.code)
        return LLMVerdict(str(intent), max(0.0, min(confidence, 1.0)))
