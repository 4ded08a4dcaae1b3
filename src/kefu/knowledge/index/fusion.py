"""Reciprocal-rank fusion: combines rankings whose scores are not comparable (cosine vs BM25)."""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60
"""The constant from Cormack et al. (2009), also Milvus's default; kefu's default (settings) is smaller."""


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """(id, fused score) best first: the sum of weight / (k + rank) over the rankings that have the id."""
    scores: dict[str, float] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[index]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
