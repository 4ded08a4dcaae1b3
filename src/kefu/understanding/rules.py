"""Stage 1: keyword (Aho-Corasick), whole-message and regex rules for high-frequency, unambiguous requests."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import ahocorasick

from kefu.understanding.catalogue import IntentCatalogue

_PUNCTUATION = re.compile(r"[\s\u3000-\u303f\uff00-\uff0f\uff1a-\uff20!-/:-@\[-`{-~]+")
# "不要转人工", "don't need a human": a negation just before a keyword cancels it.
_NEGATION = re.compile(r"(不要|不用|不需要|别|不想|无需|没有|don't|do not|no need to|not)\s*$", re.IGNORECASE)
_NEGATION_WINDOW = 8


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A rule that fired: the intent, the intent's priority and what matched."""

    intent: str
    priority: int
    kind: str
    """'keyword', 'exact' or 'pattern'."""
    matched: str


def _bare(text: str) -> str:
    return _PUNCTUATION.sub("", text).lower()


class RuleMatcher:
    """Matches a message against every intent's rules in one pass; well under a millisecond per message."""

    def __init__(self, catalogue: IntentCatalogue, *, max_chars: int = 60) -> None:
        self.max_chars = max_chars
        self._automaton = ahocorasick.Automaton()
        self._exact: dict[str, tuple[str, int]] = {}
        self._patterns: list[tuple[str, int, re.Pattern[str], frozenset[str]]] = []
        keywords: dict[str, list[tuple[str, int]]] = {}
        for intent in catalogue.intents:
            for keyword in intent.rules.keywords:
                keywords.setdefault(keyword.lower(), []).append((intent.name, intent.priority))
            for phrase in intent.rules.exact:
                self._exact[_bare(phrase)] = (intent.name, intent.priority)
            for rule in intent.rules.patterns:
                self._patterns.append(
                    (intent.name, intent.priority, re.compile(rule.regex), frozenset(rule.requires_any))
                )
        for keyword, owners in keywords.items():
            self._automaton.add_word(keyword, (keyword, tuple(owners)))
        self._has_keywords = bool(keywords)
        if self._has_keywords:
            self._automaton.make_automaton()
        self.pattern_entity_types = frozenset(t for _, _, _, required in self._patterns for t in required)
        """Entity types some pattern rule depends on."""
        self._hits = functools.lru_cache(maxsize=4096)(self._match)
        """Each message's hits, kept for recent texts (by the entity types the patterns ask for): the same FAQ
        questions and flow answers come on turn after turn."""

    def match(self, text: str, entity_types: Collection[str] = ()) -> tuple[RuleHit, ...]:
        """Every rule that fires on `text`, highest priority first."""
        return self._hits(text, self.pattern_entity_types.intersection(entity_types))

    def _match(self, text: str, entity_types: frozenset[str]) -> tuple[RuleHit, ...]:
        hits: list[RuleHit] = []
        exact = self._exact.get(_bare(text))
        if exact is not None:
            hits.append(RuleHit(exact[0], exact[1], "exact", text.strip()))
        if len(text) > self.max_chars:
            # A long message usually says several things; one keyword in it does not decide the intent.
            return tuple(hits)
        if self._has_keywords:
            lowered = text.lower()
            for end, (keyword, owners) in self._automaton.iter(lowered):
                start = end - len(keyword) + 1
                if _NEGATION.search(lowered[max(0, start - _NEGATION_WINDOW) : start]):
                    continue
                hits.extend(RuleHit(name, priority, "keyword", keyword) for name, priority in owners)
        for name, priority, pattern, required in self._patterns:
            if required and not required.intersection(entity_types):
                continue
            m = pattern.search(text)
            if m is not None:
                hits.append(RuleHit(name, priority, "pattern", m.group(0)))
        hits.sort(key=lambda h: -h.priority)
        return tuple(hits)

    @staticmethod
    def decide(hits: Sequence[RuleHit]) -> RuleHit | None:
        """The winning hit, or None when two intents of the same top priority fired (ambiguous)."""
        if not hits:
            return None
        top = hits[0]
        rivals = {h.intent for h in hits if h.priority == top.priority}
        return top if len(rivals) == 1 else None
