"""Calibrates the semantic answer cache on labelled question pairs: paraphrases to serve, near-misses never to.

Each pair is a question whose answer is cached and a question asked later: `same` when the cached answer is right
for it too (a paraphrase), not when it would be wrong (a near-miss: another region, another payment method). Both go
through understanding, curated matching and retrieval as a turn would; a pair can be served only when both reach
the semantic cache (a model answer from the knowledge, not a curated one) with the same language and intent, and
rest on the same knowledge (`answers_alike`). The report shows, per similarity threshold, how many paraphrases
would be served and how many near-misses would be (which must be none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kefu.errors import DataFileError
from kefu.eval.retrieval import read_jsonl
from kefu.knowledge.rewrite import looks_like_follow_up
from kefu.knowledge.service import KnowledgeService
from kefu.knowledge.types import SearchHit
from kefu.pipeline.stages.cache_policy import PERSONAL_ENTITIES, answers_alike
from kefu.understanding.catalogue import Handler
from kefu.understanding.service import Understanding

THRESHOLDS = tuple(round(0.80 + 0.005 * i, 3) for i in range(40))
_ANSWERED_FROM_KNOWLEDGE = {Handler.FAQ.value, Handler.KNOWLEDGE.value}


@dataclass(frozen=True, slots=True)
class CachePair:
    cached: str
    asked: str
    same: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class Seen:
    """How a turn sees one question: whether it reaches the semantic cache, and with what."""

    text: str
    language: str
    intent: str | None
    reaches_cache: bool
    reason: str
    """Why it does not reach the semantic cache (empty when it does)."""
    passages: tuple[SearchHit, ...]
    terms: tuple[str, ...]
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class PairResult:
    pair: CachePair
    similarity: float
    comparable: bool
    """Both questions reach the semantic cache with the same language, intent and evidence."""
    note: str

    @property
    def served_at(self) -> float | None:
        """The highest threshold at which the cached answer would be served (None: never)."""
        return self.similarity if self.comparable else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cached": self.pair.cached,
            "asked": self.pair.asked,
            "same": self.pair.same,
            "similarity": round(self.similarity, 4),
            "comparable": self.comparable,
            "note": self.note,
        }


def load_pairs(path: Path) -> list[CachePair]:
    pairs = []
    for line, obj in read_jsonl(path):
        try:
            pairs.append(CachePair(str(obj["cached"]), str(obj["asked"]), bool(obj["same"]), str(obj.get("why", ""))))
        except KeyError as exc:
            raise DataFileError(str(path), line, f"missing {exc.args[0]!r} (need cached, asked, same)") from None
    if not pairs:
        raise DataFileError(str(path), None, "no pairs")
    return pairs


async def see(text: str, understanding: Understanding, knowledge: KnowledgeService, tenant_id: str = "default") -> Seen:
    """What the cache stages would know about `text` as the first message of a session."""
    result = understanding.analyse(text)
    vector = await knowledge.embed_query(text)
    language, intent = result.language, result.intent.intent

    def seen(reason: str, passages: Sequence[SearchHit] = ()) -> Seen:
        terms = tuple(knowledge.tokenizer.terms(text))
        return Seen(text, language, intent, not reason, reason, tuple(passages), terms, vector)

    if result.route.handler not in _ANSWERED_FROM_KNOWLEDGE:
        return seen(f"routed to {result.route.handler}")
    if any(e.type in PERSONAL_ENTITIES for e in result.entities) or looks_like_follow_up(text):
        return seen("personal or not self-contained")
    match = knowledge.exact_curated(text, tenant_id=tenant_id) or knowledge.best_curated(
        text, vector, tenant_id=tenant_id, language=language
    )
    if knowledge.curated_answer(text, match):
        return seen("curated answer")
    hits = await knowledge.search(text, tenant_id=tenant_id, language=language, vector=vector)
    if not knowledge.coverage(text, hits).answerable:
        return seen("not covered by the knowledge")
    return seen("", knowledge.passages(hits))


async def observe(
    pairs: Sequence[CachePair], understanding: Understanding, knowledge: KnowledgeService
) -> list[PairResult]:
    seen: dict[str, Seen] = {}
    for text in dict.fromkeys(t for p in pairs for t in (p.cached, p.asked)):
        seen[text] = await see(text, understanding, knowledge)
    results = []
    tokenizer = knowledge.tokenizer
    for pair in pairs:
        cached, asked = seen[pair.cached], seen[pair.asked]
        similarity = float(cached.vector @ asked.vector)
        if not cached.reaches_cache:
            note = f"cached question: {cached.reason}"
        elif not asked.reaches_cache:
            note = f"asked question: {asked.reason}"
        elif cached.language != asked.language:
            note = "other language"
        elif cached.intent != asked.intent:
            note = f"other intent ({cached.intent} / {asked.intent})"
        elif not answers_alike(
            cached.terms, [p.chunk.id for p in cached.passages], asked.terms, asked.passages, tokenizer
        ):
            note = "other knowledge (passages, or the words they contain)"
        else:
            note = ""
        results.append(PairResult(pair, similarity, comparable=not note, note=note))
    return results


def threshold_table(results: Sequence[PairResult]) -> list[dict[str, Any]]:
    """Per threshold: paraphrases served (of all labelled), near-misses served."""
    paraphrases = [r for r in results if r.pair.same]
    misses = [r for r in results if not r.pair.same]
    rows = []
    for t in THRESHOLDS:
        rows.append(
            {
                "threshold": t,
                "paraphrases_served": sum(1 for r in paraphrases if (r.served_at or 0.0) >= t),
                "paraphrases": len(paraphrases),
                "near_misses_served": sum(1 for r in misses if (r.served_at or 0.0) >= t),
                "near_misses": len(misses),
            }
        )
    return rows


def suggest_threshold(results: Sequence[PairResult], *, margin: float = 0.01) -> float:
    """`margin` above the most similar near-miss that passes every other check (same language, intent and
    knowledge): the threshold is what stops those, e.g. a city the knowledge never names. At least 0.9."""
    worst = max((r.similarity for r in results if not r.pair.same and r.comparable), default=0.0)
    return round(min(0.99, max(0.9, worst + margin)), 3)
