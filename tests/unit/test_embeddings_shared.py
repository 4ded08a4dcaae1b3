"""One embedder per process: understanding and knowledge embed a customer's message once between them."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from kefu.api.app import create_app
from kefu.config import EmbeddingSettings
from kefu.embeddings.base import Vectors
from kefu.embeddings.shared import EmbeddingCounter, RecentQueries, SharedEmbedders, embed_query
from kefu.embeddings.testing import HashingEmbedder
from kefu.embeddings.worker_vectors import WorkerVectors
from kefu.llm.testing import ScriptedLLM
from kefu.services import Services
from kefu.worker_memory import ENV, SlotTable, TableSize
from tests.conftest import make_settings
from tests.support.worker_memory import tear_one_slot


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


# --- several workers: the query vectors they share --------------------------------------------------------------


@pytest.fixture
def table() -> Iterator[SlotTable]:
    created = SlotTable.create(TableSize(slots=64, payload_bytes=4 * 384))
    yield created
    created.close()


def _worker(model: HashingEmbedder, table: SlotTable, counted: EmbeddingCounter | None = None) -> RecentQueries:
    """One worker's memo, attached to the table as another process would attach to it."""
    return RecentQueries(model, shared=WorkerVectors(SlotTable.attach(table.name)), counted=counted)


def test_a_vector_one_worker_computed_serves_the_other_without_its_model(table: SlotTable) -> None:
    model_a, model_b = HashingEmbedder(), HashingEmbedder()
    sources: Counter[str] = Counter()
    worker_a = _worker(model_a, table)
    worker_b = _worker(model_b, table, counted=lambda source, n: sources.update({source: n}))
    first = worker_a.embed_queries(["退货政策是什么？"])[0]

    found = worker_b.recall("退货政策是什么？")
    assert found is not None
    np.testing.assert_array_equal(found, first)
    both = worker_b.embed_queries(["退货政策是什么？", "How long does delivery take?"])
    assert model_b.embedded == 1  # only the question worker A had not seen
    np.testing.assert_array_equal(both[0], first)
    assert (worker_b.hits, worker_b.shared_hits, worker_b.misses) == (2, 1, 1)  # the second time from its own memo
    assert sources == {"workers": 1, "memo": 1, "model": 1}  # what /metrics shows (kefu_query_embeddings_total)
    assert worker_a.recall("How long does delivery take?") is not None  # and back the other way
    assert model_a.embedded == 1


def test_another_model_never_sees_those_vectors_nor_does_one_too_long_to_share(table: SlotTable) -> None:
    class OtherModel(HashingEmbedder):
        name = "testing:other"

    _worker(HashingEmbedder(), table).embed_queries(["退货政策是什么？"])
    assert _worker(OtherModel(), table).recall("退货政策是什么？") is None
    wide = _worker(HashingEmbedder(dim=385), table)
    assert wide.shared is None
    wide.embed_queries(["退货政策是什么？"])  # embedded and remembered by this worker alone


def test_a_vector_caught_mid_write_reads_as_a_miss_and_the_model_runs(table: SlotTable) -> None:
    writer = _worker(HashingEmbedder(), table)
    expected = writer.embed_queries(["退货政策是什么？"])
    tear_one_slot(table)

    model = HashingEmbedder()
    reader = _worker(model, table)
    assert reader.recall("退货政策是什么？") is None
    np.testing.assert_array_equal(reader.embed_queries(["退货政策是什么？"]), expected)
    assert model.embedded == 1


def test_a_worker_whose_table_is_gone_embeds_on_its_own(
    table: SlotTable, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV, f"vectors={table.name}")
    attached = WorkerVectors.from_env()
    assert attached is not None and attached.max_dim == 384
    attached.close()

    table.close()  # the serving process removes it on exit
    with caplog.at_level(logging.WARNING, logger="kefu.worker_memory"):
        embedders = SharedEmbedders.for_settings(EmbeddingSettings(backend="hashing"))
    assert f"worker table vectors '{table.name}' unavailable" in caplog.text
    assert embedders.workers is None and embedders.local("hashing").embed_queries(["hi"]).shape == (1, 256)
    embedders.close()


def _embed_in_another_process(name: str, texts: list[str]) -> int:
    model = HashingEmbedder()
    RecentQueries(model, shared=WorkerVectors(SlotTable.attach(name))).embed_queries(texts)
    return model.embedded


def test_workers_in_separate_processes_share_vectors(table: SlotTable) -> None:
    """Real processes, started as uvicorn starts its workers (spawn): what one computed, the other reads."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_embed_in_another_process, table.name, ["退货政策是什么？", "转人工"]).result() == 2
        model = HashingEmbedder()
        here = _worker(model, table)
        vectors = here.embed_queries(["退货政策是什么？", "转人工", "发票怎么开？"])
        assert model.embedded == 1 and here.shared_hits == 2
        np.testing.assert_array_equal(vectors[:2], HashingEmbedder().embed_queries(["退货政策是什么？", "转人工"]))
        assert pool.submit(_embed_in_another_process, table.name, ["发票怎么开？"]).result() == 0
