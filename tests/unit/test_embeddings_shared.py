"""One embedder per process: understanding and knowledge embed a customer's message once between them."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.config import EmbeddingSettings
from kefu.embeddings.base import Vectors
from kefu.embeddings.shared import RecentQueries, SharedEmbedders, embed_query
from kefu.embeddings.testing import HashingEmbedder
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from tests.conftest import make_settings


def test_a_repeated_query_is_embedded_once_and_passages_are_never_remembered() -> None:
    inner = HashingEmbedder()
    shared = RecentQueries(inner, size=2)
    first = shared.embed_queries(["退货政策是什么？"])
    again = shared.embed_queries(["退货政策是什么？"])
    assert inner.embedded == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, inner.embed_queries(["退货政策是什么？"]))

    both = shared.embed_queries(["a question", "退货政策是什么？", "a question"])
    assert both.shape == (3, inner.dim)
    np.testing.assert_array_equal(both[0], both[2])
    assert (shared.hits, shared.misses) == (3, 2)

    shared.embed_queries(["a third question"])  # evicts the least recently used of the two remembered
    before = inner.embedded
    shared.embed_queries(["a question"])
    shared.embed_queries(["退货政策是什么？"])
    assert inner.embedded == before + 1

    shared.embed_passages(["p"])
    shared.embed_passages(["p"])
    assert inner.embedded == before + 3


async def test_a_remembered_query_is_answered_on_the_event_loop_and_a_new_one_on_a_thread() -> None:
    threads: list[int] = []

    class Recording(HashingEmbedder):
        def embed_queries(self, texts: Sequence[str]) -> Vectors:
            threads.append(threading.get_ident())
            return super().embed_queries(texts)

    inner = Recording()
    shared = RecentQueries(inner)
    assert shared.recall("退货政策是什么？") is None
    first = await embed_query(shared, "退货政策是什么？")
    assert threads and threads[0] != threading.get_ident()  # the model ran on a worker thread
    np.testing.assert_array_equal(first, inner.embed_queries(["退货政策是什么？"])[0])
    runs = inner.embedded
    again = await embed_query(shared, "退货政策是什么？")
    assert inner.embedded == runs
    np.testing.assert_array_equal(again, first)
    assert (shared.hits, shared.misses) == (1, 1)
    np.testing.assert_array_equal(await embed_query(inner, "退货政策是什么？"), first)  # any embedder works


def test_one_instance_per_model_and_a_server_per_configuration() -> None:
    embedders = SharedEmbedders()
    knowledge = embedders.get(EmbeddingSettings(backend="hashing", batch_size=8))
    assert embedders.local("hashing") is knowledge
    server_a = embedders.get(EmbeddingSettings(backend="openai", base_url="http://127.0.0.1:9/v1"))
    server_b = embedders.get(EmbeddingSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="e5"))
    assert server_a is not server_b
    embedders.close()


@pytest.fixture
async def app(tmp_path: Path, llm: ScriptedLLM) -> AsyncIterator[FastAPI]:
    knowledge_dir = tmp_path / "knowledge"
    knowledge_dir.mkdir()
    (knowledge_dir / "returns.md").write_text(
        "# Returns\n\nReturn any unused item within 7 days of delivery. The buyer pays the return postage.\n"
    )
    settings = make_settings(
        tmp_path,
        knowledge={"source_dir": knowledge_dir, "embedding": {"backend": "hashing"}, "min_relevance": 0.1},
        understanding={"embedder": "hashing", "llm_fallback": False, "cache_dir": tmp_path / "understanding"},
        guards={"embedding_classifier": False},
    )
    application = create_app(settings, llm=llm)
    async with application.router.lifespan_context(application):
        yield application


async def test_understanding_and_knowledge_share_the_vector_of_the_customers_message(
    client: httpx.AsyncClient, llm: ScriptedLLM, app: FastAPI
) -> None:
    services: Services = app.state.services
    shared = services.embedders.local("hashing")
    assert services.knowledge is not None and services.knowledge.embedder is shared
    before = shared.misses
    llm.queue("Within 7 days of delivery, if unused.")
    response = await client.post("/v1/chat", json={"user_id": "u1", "text": "How many days do I have to return it?"})
    assert response.status_code == 200
    reply = (await services.store.list_messages(response.json()["session_id"]))[-1]
    # Both stages looked at the message: the intent classifier and the knowledge search.
    assert "understanding" in reply.trace and reply.trace["knowledge"].get("hits")
    assert shared.misses == before + 1
    assert shared.hits >= 1
