"""The intent catalogue: what customers may want and where each want is routed, loaded from intents.yaml."""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kefu.datafiles import load_yaml_model
from kefu.shop import Bilingual
from kefu.understanding.types import ENTITY_TYPES, OOS_LABEL

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class Handler(StrEnum):
    """The kinds of handler a turn can be routed to."""

    FAQ = "faq"
    """A curated answer, returned verbatim."""
    KNOWLEDGE = "knowledge"
    """Retrieval over the shop's documents plus the LLM, with citations."""
    FLOW = "flow"
    """A scripted dialogue (returns, address changes) with backend actions."""
    TOOL_AGENT = "tool_agent"
    """The LLM with tools over the shop backend (order lookups)."""
    HANDOFF = "handoff"
    """A human agent."""
    SMALL_TALK = "small_talk"
    """Greetings, thanks and goodbyes."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerLanguage(_Strict):
    """Phrases in Chinese and English; either list may be empty."""

    zh: list[str] = Field(default_factory=list)
    en: list[str] = Field(default_factory=list)

    @field_validator("zh", "en")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values]
        if any(not v for v in cleaned):
            raise ValueError("empty phrase")
        return cleaned

    def all(self) -> list[str]:
        return [*self.zh, *self.en]


class PatternRule(_Strict):
    """A regular expression that decides the intent, optionally only when some entities are present too."""

    regex: str
    requires_any: list[str] = Field(default_factory=list)
    """The rule fires only when the message also has an entity of one of these types (e.g. order_number)."""

    @field_validator("requires_any")
    @classmethod
    def _requires_known(cls, values: list[str]) -> list[str]:
        return _known_entity_types(values)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


def _known_entity_types(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in ENTITY_TYPES]
    if unknown:
        raise ValueError(f"unknown entity type(s) {unknown}; known: {', '.join(ENTITY_TYPES)}")
    return values


class IntentRules(_Strict):
    """Stage-1 rules: high-frequency, unambiguous phrasings decided without a model."""

    keywords: list[str] = Field(default_factory=list)
    """Phrases that decide the intent wherever they appear (case-insensitive)."""
    exact: list[str] = Field(default_factory=list)
    """Phrases that decide the intent only when they are the whole message (ignoring punctuation)."""
    patterns: list[PatternRule] = Field(default_factory=list)


class IntentSpec(_Strict):
    """One thing a customer may want."""

    name: str
    description: Bilingual
    handler: Handler
    priority: int = Field(default=50, ge=0, le=100)
    """Breaks ties between rules, and orders handlers in the router; higher wins."""
    flow: str | None = None
    """The flow a `flow` handler starts (flows come with their own issue)."""
    requires_any: list[str] = Field(default_factory=list)
    """The handler needs one entity of these types (e.g. an order or tracking number); none is recorded."""
    examples: PerLanguage
    rules: IntentRules = Field(default_factory=IntentRules)
    tools: list[str] = Field(default_factory=list)
    """For a `tool_agent` handler: the read actions (actions.yaml) the agent may call for this intent."""

    @field_validator("requires_any")
    @classmethod
    def _requires_known(cls, values: list[str]) -> list[str]:
        return _known_entity_types(values)

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("a tool is listed twice")
        return values

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.match(value) or value == OOS_LABEL:
            raise ValueError(f"intent names are snake_case ([a-z][a-z0-9_]*) and not {OOS_LABEL!r}")
        return value

    @model_validator(mode="after")
    def _has_examples(self) -> Self:
        if len(self.examples.all()) < 2:
            raise ValueError(f"intent {self.name!r} needs at least 2 examples to be learnt")
        if self.tools and self.handler != Handler.TOOL_AGENT:
            raise ValueError(f"intent {self.name!r} lists tools, but only a tool_agent handler uses them")
        return self


class OutOfScope(_Strict):
    """Questions the shop does not handle, so the classifier learns what 'none of the above' looks like."""

    description: Bilingual = Bilingual(
        zh="与本店商品、订单和服务无关的问题", en="Questions unrelated to the shop's products, orders and services"
    )
    examples: PerLanguage = Field(default_factory=PerLanguage)


class IntentCatalogue(_Strict):
    """Every intent of one shop, plus examples of what is out of scope."""

    version: int = 1
    intents: list[IntentSpec] = Field(min_length=1)
    out_of_scope: OutOfScope = Field(default_factory=OutOfScope)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for intent in self.intents:
            if intent.name in seen:
                raise ValueError(f"intent {intent.name!r} is defined twice")
            seen.add(intent.name)
        return self

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.intents]

    def get(self, name: str) -> IntentSpec | None:
        return next((i for i in self.intents if i.name == name), None)

    def training_rows(self) -> tuple[list[str], list[str]]:
        """(texts, labels) of every example; out-of-scope examples carry the `oos` label."""
        texts: list[str] = []
        labels: list[str] = []
        for intent in self.intents:
            for text in intent.examples.all():
                texts.append(text)
                labels.append(intent.name)
        for text in self.out_of_scope.examples.all():
            texts.append(text)
            labels.append(OOS_LABEL)
        return texts, labels

    def fingerprint(self) -> str:
        """A hash of everything that shapes the trained model, so a changed catalogue retrains."""
        # The agent's tools do not change what is learnt: editing them must not retrain the classifier.
        shaping = self.model_dump(mode="json", exclude={"intents": {"__all__": {"tools"}}})
        payload = json.dumps(shaping, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_catalogue(path: Path) -> IntentCatalogue:
    """Load and validate intents.yaml; a mistake is reported with its file and line."""
    return load_yaml_model(path, IntentCatalogue)
