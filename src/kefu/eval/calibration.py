"""Calibrates the knowledge thresholds on labelled questions: curated-answer similarity and "not covered".

In-knowledge queries (with their relevant ids) and out-of-knowledge questions go through the bot's own
matching and retrieval; the report shows, per threshold, how many customers would get a curated answer, how
many of those would be wrong, and how many out-of-knowledge questions would slip through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kefu.eval.retrieval import EvalQuery
from kefu.knowledge.ingest.parsers import FAQ_SUFFIXES
from kefu.knowledge.service import KnowledgeService
from kefu.language import detect_language

CURATED_THRESHOLDS = tuple(round(0.80 + 0.005 * i, 3) for i in range(40))
RELEVANCE_THRESHOLDS = tuple(round(0.70 + 0.005 * i, 3) for i in range(50))


@dataclass(frozen=True, slots=True)
class Observation:
    """What the bot saw for one question: best curated match and retrieval evidence."""

    query: str
    in_knowledge: bool
    faq_relevant: bool
    curated_score: float
    curated_margin: float
    curated_correct: bool
    curated_accepted: bool
    """The configured rule (threshold, margin, word overlap) would answer with this match."""
    best_dense: float
    lexical: float


async def observe(
    service: KnowledgeService, queries: Sequence[EvalQuery], negatives: Sequence[str], *, tenant_id: str = "default"
) -> list[Observation]:
    out = []
    for query, relevant in [*((q.query, q.relevant) for q in queries), *((n, ()) for n in negatives)]:
        language = detect_language(query)
        vector = await service.embed_query(query)
        match = service.best_curated(query, vector, tenant_id=tenant_id, language=language)
        hits = await service.search(query, tenant_id=tenant_id, language=language, vector=vector)
        coverage = service.coverage(query, hits)
        out.append(
            Observation(
                query=query,
                in_knowledge=bool(relevant),
                faq_relevant=any(_is_faq_ref(r) for r in relevant),
                curated_score=match.score if match else 0.0,
                curated_margin=match.margin if match else 0.0,
                curated_correct=bool(match and match.row.info.ref in relevant),
                curated_accepted=service.curated_answer(query, match),
                best_dense=coverage.best_dense,
                lexical=coverage.lexical,
            )
        )
    return out


def _is_faq_ref(ref: str) -> bool:
    return ref.split("#", 1)[0].lower().endswith(FAQ_SUFFIXES)


def curated_table(observations: Sequence[Observation]) -> list[dict[str, Any]]:
    """Per threshold: answered, answered correctly, answered wrongly (wrong FAQ or out of knowledge)."""
    eligible = sum(1 for o in observations if o.faq_relevant)
    rows = []
    for t in CURATED_THRESHOLDS:
        answered = [o for o in observations if o.curated_score >= t]
        correct = sum(1 for o in answered if o.curated_correct)
        rows.append(
            {
                "threshold": t,
                "answered": len(answered),
                "correct": correct,
                "wrong": len(answered) - correct,
                "recall": round(correct / eligible, 4) if eligible else 0.0,
                "precision": round(correct / len(answered), 4) if answered else 1.0,
            }
        )
    return rows


def relevance_table(observations: Sequence[Observation], *, lexical: float, low: float) -> list[dict[str, Any]]:
    """Per `min_relevance`: in-knowledge questions wrongly declined, out-of-knowledge ones let through."""
    inside = [o for o in observations if o.in_knowledge]
    outside = [o for o in observations if not o.in_knowledge]
    rows = []
    for t in RELEVANCE_THRESHOLDS:

        def answerable(o: Observation, t: float = t) -> bool:
            return o.best_dense >= t or (o.best_dense >= low and o.lexical >= lexical)

        rows.append(
            {
                "min_relevance": t,
                "declined_in_knowledge": sum(1 for o in inside if not answerable(o)),
                "answered_out_of_knowledge": sum(1 for o in outside if answerable(o)),
                "in_knowledge": len(inside),
                "out_of_knowledge": len(outside),
            }
        )
    return rows


def suggest_curated(rows: Sequence[dict[str, Any]]) -> float:
    """The lowest threshold at which no curated answer is wrong (a wrong verbatim answer is the worst outcome)."""
    safe = [r for r in rows if r["wrong"] == 0]
    return float(min(r["threshold"] for r in safe)) if safe else 0.99
