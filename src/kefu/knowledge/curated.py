"""Curated answers first: a customer question close enough to a curated FAQ question gets its answer verbatim."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kefu.knowledge.repository import FaqRow
from kefu.knowledge.text import normalize_question
from kefu.knowledge.types import Vector


@dataclass(frozen=True, slots=True)
class CuratedMatch:
    """The closest curated question, how close it is, and how close the next-best different entry is."""

    row: FaqRow
    score: float
    variant: str
    runner_up: float

    @property
    def margin(self) -> float:
        return self.score - self.runner_up


class CuratedAnswers:
    """Every phrasing of every curated question as one matrix: one dot product per customer question."""

    def __init__(self, rows: list[FaqRow]) -> None:
        self.rows = rows
        self._variants = [v for row in rows for v in (row.variants or (row.question,))[: len(row.vectors)]]
        self._owner = np.array([i for i, row in enumerate(rows) for _ in range(len(row.vectors))], dtype=np.int64)
        # Each entry's phrasings are consecutive rows of the matrix: an entry's score is the best of its run.
        sizes = np.array([len(row.vectors) for row in rows], dtype=np.int64)
        self._scored = sizes > 0
        self._starts = (np.cumsum(sizes) - sizes)[self._scored]
        self._allowed: dict[tuple[str, str | None], npt.NDArray[np.bool_] | None] = {}
        dim = rows[0].vectors.shape[1] if rows else 1
        self._matrix: npt.NDArray[np.float32] = (
            np.vstack([row.vectors for row in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
        )
        self._exact = {normalize_question(v): i for i, row in enumerate(rows) for v in row.variants}
        self._best = functools.lru_cache(maxsize=2048)(self._closest)
        """The match of recent questions (by their words and vector's bytes): FAQ questions keep coming."""

    def __len__(self) -> int:
        return len(self.rows)

    def languages(self, tenant_id: str) -> set[str]:
        return {r.info.lang for r in self.rows if r.info.tenant_id == tenant_id and r.info.lang}

    def _allowed_rows(self, tenant_id: str, lang: str | None) -> npt.NDArray[np.bool_] | None:
        """The entries a question of this tenant in this language may match (any of the tenant's when none is in
        its language), or None; worked out once per tenant and language."""
        key = (tenant_id, lang)
        if key not in self._allowed:
            allowed = np.array(
                [r.info.tenant_id == tenant_id and (lang is None or r.info.lang in (lang, None)) for r in self.rows],
                dtype=np.bool_,
            )
            if not allowed.any() and lang is not None:
                allowed = np.array([r.info.tenant_id == tenant_id for r in self.rows], dtype=np.bool_)
            self._allowed[key] = allowed if allowed.any() else None
        return self._allowed[key]

    def exact(self, question: str, *, tenant_id: str) -> CuratedMatch | None:
        """The entry with this exact phrasing (ignoring case, width and punctuation): no embedding needed."""
        index = self._exact.get(normalize_question(question))
        if index is None or self.rows[index].info.tenant_id != tenant_id:
            return None
        return CuratedMatch(row=self.rows[index], score=1.0, variant=question, runner_up=0.0)

    def best(self, question: str, vector: Vector, *, tenant_id: str, lang: str | None) -> CuratedMatch | None:
        """The closest entry of this tenant in the customer's language (any language if it has none)."""
        return self._best(question, np.asarray(vector, dtype=np.float32).tobytes(), tenant_id, lang)

    def _closest(self, question: str, vector_bytes: bytes, tenant_id: str, lang: str | None) -> CuratedMatch | None:
        allowed = self._allowed_rows(tenant_id, lang)
        if allowed is None:
            return None
        scores = self._matrix @ np.frombuffer(vector_bytes, dtype=np.float32)
        per_row = np.full(len(self.rows), -1.0, dtype=np.float32)
        if len(scores):
            per_row[self._scored] = np.maximum.reduceat(scores, self._starts)
        per_row[~allowed] = -1.0
        exact = self._exact.get(normalize_question(question))
        if exact is not None and allowed[exact]:
            per_row[exact] = 1.0
        order = np.argsort(-per_row, kind="stable")
        best = int(order[0])
        runner_up = float(per_row[order[1]]) if len(order) > 1 and per_row[order[1]] > -1 else 0.0
        variant_scores = np.where(self._owner == best, scores, -2.0)
        variant = self._variants[int(np.argmax(variant_scores))] if len(self._variants) else self.rows[best].question
        return CuratedMatch(row=self.rows[best], score=float(per_row[best]), variant=variant, runner_up=runner_up)
