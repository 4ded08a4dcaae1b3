"""An on-disk cache of training-example embeddings, so a restart or a changed catalogue re-embeds only new texts."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kefu.embeddings.base import Embedder, Vectors

log = logging.getLogger(__name__)


def _key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class CachedEmbedder:
    """Wraps an embedder's `embed_queries` with a cache file per embedder in `directory` (None: memory only).

    For curated examples (intents, emotions, injection examples). Customer messages are never cached on disk:
    the stages embed them with the shared embedder (`kefu.embeddings.shared`), which remembers them in memory only.
    """

    def __init__(self, embedder: Embedder, directory: Path | None) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.dim = embedder.dim
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)
        self._path = directory / f"embeddings-{slug}.npz" if directory is not None else None
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if self._path is not None and self._path.is_file():
            try:
                with np.load(self._path) as data:
                    keys, vectors = data["keys"], data["vectors"]
                if vectors.shape[1:] == (self.dim,):
                    self._vectors = {str(k): v for k, v in zip(keys, vectors, strict=True)}
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable embedding cache %s: %s", self._path, exc)

    def embed_queries(self, texts: Sequence[str], *, batch: int = 64) -> Vectors:
        """Vectors for `texts` (query side), computing only those not cached yet."""
        keys = [_key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}.items())
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            vectors = self.embedder.embed_queries([t for _, t in chunk])
            for (key, _), vector in zip(chunk, vectors, strict=True):
                self._vectors[key] = vector
            self._dirty = True
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self._vectors[k] for k in keys]).astype(np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """Passages are not cached (understanding embeds none); passed through so this is an `Embedder` too."""
        return self.embedder.embed_passages(texts)

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors), dtype="U24")
        vectors = np.vstack(list(self._vectors.values())).astype(np.float32)
        tmp = self._path.with_name(f"{self._path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(self._path)
        self._dirty = False
