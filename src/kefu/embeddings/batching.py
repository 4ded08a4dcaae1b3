"""Micro-batching: query embeddings asked for at the same time by many turns share one model batch.

Each turn embeds its customer's message on a worker thread. Under load, dozens do so at once; one model call over
32 texts costs far less than 32 calls over one (the local model packs them into one forward pass, a server gets one
HTTP request). The first caller to find the model idle leads: it runs the batch on its own thread, hands every caller
its rows, and the next waiting caller leads the next batch. Texts queued while a batch runs form the next one, so
under load batches fill up by themselves. When the last batch served several callers (there is load), the leader
also waits up to `wait_s` for company first, until `max_texts` are queued; a lone caller on an idle model never waits.

An embedder that serves several calls at once (`concurrent_calls`: the bundled model on ONNX Runtime runs one per
core) gets up to that many batches in flight, the queue shared out between them: on a machine where the model, not
Python, is the bottleneck, one batch at a time would leave all cores but one idle.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from kefu.embeddings.base import Embedder, Vectors
from kefu.embeddings.registry import close_embedder


class _Request:
    __slots__ = ("done", "error", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: Vectors | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher:
    """Runs `embed` over the texts of concurrent callers together, at most `max_texts` per call (a single caller's
    longer list goes alone) and at most `parallel` calls at once; each caller gets exactly the rows of its own texts."""

    def __init__(
        self, embed: Callable[[list[str]], Vectors], *, max_texts: int, wait_s: float, parallel: int = 1
    ) -> None:
        self._embed = embed
        self.max_texts = max_texts
        self.wait_s = wait_s
        self.parallel = max(1, parallel)
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._queued_texts = 0
        self._running = 0
        self._last_batch_callers = 1
        self._count_lock = threading.Lock()
        self.batches = 0
        """Model calls made (a failed batch retried caller by caller counts each retry)."""

    def __call__(self, texts: Sequence[str]) -> Vectors:
        request = _Request(list(texts))
        with self._cond:
            self._pending.append(request)
            self._queued_texts += len(request.texts)
            self._cond.notify_all()
            while not request.done:
                if self._running >= self.parallel or request not in self._pending:
                    # Every slot is busy, or another leader has taken this request into its batch.
                    self._cond.wait()
                    continue
                self._running += 1
                batch = self._gather()
                self._cond.release()
                try:
                    if batch:
                        self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running -= 1
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _gather(self) -> list[_Request]:
        """Under load, wait (lock released) up to `wait_s` for more texts; take the oldest requests that fit a batch,
        leaving a fair share of the queue to the batches that may start beside this one."""
        deadline = time.monotonic() + self.wait_s
        while self._last_batch_callers > 1 and self._queued_texts < self.max_texts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        if not self._pending:
            return []  # batches started beside this one while it waited have taken everything, this caller's too
        free_slots = self.parallel - self._running + 1  # this batch's slot included
        limit = min(self.max_texts, math.ceil(self._queued_texts / free_slots))
        batch = [self._pending.popleft()]
        size = len(batch[0].texts)
        while self._pending and size + len(self._pending[0].texts) <= limit:
            size += len(self._pending[0].texts)
            batch.append(self._pending.popleft())
        self._queued_texts -= size
        self._last_batch_callers = len(batch)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            unique = list(dict.fromkeys(text for request in batch for text in request.texts))
            self._count()
            vectors = self._embed(unique)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                self._run_one_by_one(batch)  # a bad input or a flaky server fails only its own caller
        else:
            row = {text: i for i, text in enumerate(unique)}
            for request in batch:
                request.vectors = vectors[[row[t] for t in request.texts]]
        finally:
            for request in batch:
                if request.vectors is None and request.error is None:
                    request.error = RuntimeError("the embedding batch was interrupted")
                request.done = True

    def _count(self) -> None:
        with self._count_lock:  # batches run side by side when `parallel` > 1
            self.batches += 1

    def _run_one_by_one(self, batch: list[_Request]) -> None:
        for request in batch:
            try:
                self._count()
                request.vectors = self._embed(request.texts)
            except Exception as exc:
                request.error = exc


class BatchingEmbedder:
    """An `Embedder` whose concurrent `embed_queries` calls share model batches; passages (ingestion, already
    batched by the caller) pass straight through."""

    def __init__(self, inner: Embedder, *, max_texts: int = 32, wait_s: float = 0.002) -> None:
        self.inner = inner
        parallel = int(getattr(inner, "concurrent_calls", 1))
        self.queries = MicroBatcher(inner.embed_queries, max_texts=max_texts, wait_s=wait_s, parallel=parallel)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed_passages(texts)

    def close(self) -> None:
        close_embedder(self.inner)
