"""Curated matching: an entry scores its best phrasing, only the asker's tenant and language count."""

from __future__ import annotations

import numpy as np
import pytest

from kefu.knowledge.curated import CuratedAnswers
from kefu.knowledge.repository import FaqRow
from kefu.knowledge.types import ChunkInfo

DIM = 8


def _row(index: int, phrasings: int, *, tenant: str = "default", lang: str | None = "zh") -> FaqRow:
    rng = np.random.default_rng(index)
    vectors = rng.normal(size=(phrasings, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    info = ChunkInfo(f"c{index}", "faq", 1, "faq", "a", f"Q{index}", "faq.csv", "", "", "", lang=lang, tenant_id=tenant)
    variants = tuple(f"问题{index}-{k}" for k in range(phrasings))
    return FaqRow(info, variants[0] if variants else f"问题{index}", f"答{index}", variants, vectors)


ROWS = [
    _row(0, 3),
    _row(1, 1, lang="en"),
    _row(2, 0),  # an entry without vectors is never the closest
    _row(3, 4, lang=None),
    _row(4, 2, tenant="other"),
    _row(5, 2, lang="en"),
]


def _expected(question_vector: np.ndarray, tenant: str, lang: str | None) -> tuple[int, float, float] | None:
    """The closest entry by brute force: (index, score, runner-up)."""
    allowed = [r.info.tenant_id == tenant and (lang is None or r.info.lang in (lang, None)) for r in ROWS]
    if not any(allowed) and lang is not None:
        allowed = [r.info.tenant_id == tenant for r in ROWS]
    scored = sorted(
        ((float(np.max(r.vectors @ question_vector)), i) for i, r in enumerate(ROWS) if allowed[i] and len(r.vectors)),
        reverse=True,
    )
    if not scored:
        return None
    return scored[0][1], scored[0][0], scored[1][0] if len(scored) > 1 else 0.0


@pytest.mark.parametrize(("tenant", "lang"), [("default", "zh"), ("default", "en"), ("default", None), ("other", "en")])
def test_the_closest_entry_is_the_one_with_the_closest_phrasing(tenant: str, lang: str | None) -> None:
    curated = CuratedAnswers(ROWS)
    rng = np.random.default_rng(7)
    for _ in range(50):
        vector = rng.normal(size=DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        match = curated.best("没有这句", vector, tenant_id=tenant, lang=lang)
        expected = _expected(vector, tenant, lang)
        assert match is not None and expected is not None
        index, score, runner_up = expected
        assert match.row is ROWS[index]
        assert match.score == pytest.approx(score, abs=1e-6)
        assert match.runner_up == pytest.approx(runner_up, abs=1e-6)


def test_an_exact_phrasing_wins_and_a_tenant_without_entries_gets_none() -> None:
    curated = CuratedAnswers(ROWS)
    far = -ROWS[3].vectors[0]
    match = curated.best("问题3-2", far, tenant_id="default", lang="zh")
    assert match is not None and match.row is ROWS[3] and match.score == 1.0
    assert curated.best("问题3-2", far, tenant_id="nobody", lang="zh") is None
    assert CuratedAnswers([]).best("问题", far, tenant_id="default", lang="zh") is None
