"""A deterministic fake embedder for unit tests: character n-gram hashing, no model needed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from kefu.embeddings.base import Vectors


class HashingEmbedder:
    """Texts sharing character bigrams get similar vectors; records how many texts it embedded."""

    name = "testing:hashing"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.embedded = 0
        self.calls = 0
        """Model calls (a batch of texts is one)."""

    def _vector(self, text: str) -> Vectors:
        vec = np.zeros(self.dim, dtype=np.float32)
        clean = text.lower()
        grams = [clean[i : i + 2] for i in range(max(1, len(clean) - 1))]
        for gram in grams:
            bucket = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=4).digest(), "little") % self.dim
            vec[bucket] += 1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def _many(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self._vector(t) for t in texts]).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._many(texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._many(texts)
