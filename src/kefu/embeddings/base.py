"""The one interface every text-embedding backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""(n, dim) float32, each row L2-normalised, so a dot product is the cosine similarity."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into normalised vectors; queries and passages may be embedded differently (e5 prefixes)."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Vectors for search queries and for texts compared symmetrically (intent examples)."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """Vectors for documents to be searched."""
        ...
