"""The OpenAI-compatible /v1/embeddings adapter: wire format, prefixes, normalisation, errors that name the endpoint."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from kefu.config import EmbeddingSettings
from kefu.embeddings.openai_embedder import OpenAICompatibleEmbedder
from kefu.errors import EmbeddingError

BASE_URL = "http://tei.internal:8080/v1"


def embedder(handler: httpx.MockTransport, **settings: object) -> OpenAICompatibleEmbedder:
    config = EmbeddingSettings(backend="openai", base_url=BASE_URL, model="bge-m3", **settings)  # type: ignore[arg-type]
    return OpenAICompatibleEmbedder(config, httpx.Client(transport=handler), sleep=lambda _: None)


def test_batches_prefixes_and_normalises() -> None:
    requests: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        assert request.url == f"{BASE_URL}/embeddings" and request.headers["authorization"] == "Bearer sk-x"
        data = [{"index": i, "embedding": [3.0, 4.0] if i % 2 == 0 else [0.0, 2.0]} for i in range(len(body["input"]))]
        return httpx.Response(200, json={"data": list(reversed(data)), "model": "bge-m3"})

    e = embedder(
        httpx.MockTransport(handle), api_key="sk-x", query_prefix="query: ", passage_prefix="passage: ", batch_size=2
    )
    vectors = e.embed_passages(["a", "b", "c"])
    assert [r["input"] for r in requests] == [["passage: a", "passage: b"], ["passage: c"]]
    assert vectors.shape == (3, 2) and np.allclose(vectors[0], [0.6, 0.8]) and np.allclose(vectors[1], [0.0, 1.0])
    assert e.embed_queries(["q"]).shape == (1, 2) and requests[-1]["input"] == ["query: q"]
    assert e.dim == 2 and e.name == "openai:bge-m3"


def test_base64_embeddings_are_decoded() -> None:
    raw = base64.b64encode(np.array([1.0, 0.0, 0.0], dtype="<f4").tobytes()).decode()

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"index": 0, "embedding": raw}]})

    assert embedder(httpx.MockTransport(handle)).embed_queries(["x"]).tolist() == [[1.0, 0.0, 0.0]]


def test_server_errors_are_retried_then_reported_with_the_endpoint() -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="overloaded")

    with pytest.raises(EmbeddingError, match=r"http://tei.internal:8080/v1/embeddings returned HTTP 503"):
        embedder(httpx.MockTransport(handle)).embed_queries(["x"])
    assert len(calls) == 3

    def bad_request(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, text="model not found")

    calls.clear()
    with pytest.raises(EmbeddingError, match="HTTP 400: model not found"):
        embedder(httpx.MockTransport(bad_request)).embed_queries(["x"])
    assert len(calls) == 1  # a client error is not retried

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": []})

    with pytest.raises(EmbeddingError, match="returned 0 vectors for 1 inputs"):
        embedder(httpx.MockTransport(short)).embed_queries(["x"])


def test_the_openai_backend_needs_a_url() -> None:
    from kefu.config import load_settings
    from kefu.errors import ConfigError

    with pytest.raises(ConfigError, match="KEFU_KNOWLEDGE__EMBEDDING__BASE_URL"):
        load_settings(knowledge={"embedding": {"backend": "openai"}})
