"""One suite, every index: the embedded faiss + BM25 index, Milvus Lite as a file, and a `milvus-lite server`.

What the service promises on top of any index (filters, live updates, restarts) is checked against each of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.config import KnowledgeSettings
from kefu.embeddings.testing import HashingEmbedder
from kefu.knowledge.repository import KnowledgeRepository
from kefu.knowledge.service import IngestItem, KnowledgeService
from kefu.store.database import create_engine, migrate
from tests.support.milvus import milvus_lite_server

DOCS = {
    "zh/returns.md": "# 退换货政策\n\n## 七天无理由\n\n签收后七天内可以无理由退货，退货运费由买家承担。\n",
    "zh/shipping.md": "# 配送\n\n## 运费\n\n实付满 99 元包邮，不满 99 元收取 8 元运费。\n",
    "en/returns.md": "# Returns\n\n## No-reason returns\n\nReturn any unused item within seven days of delivery.\n",
    "en/warranty.md": "# Warranty\n\n## Periods\n\nEarbuds and speakers have a twelve month warranty.\n",
}


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with milvus_lite_server(tmp_path_factory.mktemp("milvus-server") / "data") as uri:
        yield uri


BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("milvus-file", id="milvus-lite-file", marks=pytest.mark.milvus),
    pytest.param("milvus-server", id="milvus-lite-server", marks=pytest.mark.milvus),
]


@pytest.fixture(params=BACKENDS)
def knowledge_settings(request: pytest.FixtureRequest, tmp_path: Path) -> KnowledgeSettings:
    settings: dict[str, Any] = {"embedding": {"backend": "hashing"}}
    if request.param == "milvus-file":
        settings.update(index="milvus", milvus_uri=str(tmp_path / "milvus.db"))
    elif request.param == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
        settings.update(index="milvus", milvus_uri=uri, milvus_collection=f"kb_{tmp_path.name[-12:].replace('-', '_')}")
    return KnowledgeSettings(**settings)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def open_service(settings: KnowledgeSettings, engine: AsyncEngine, data_dir: Path) -> KnowledgeService:
    service = KnowledgeService(settings, KnowledgeRepository(engine), HashingEmbedder(), data_dir=data_dir)
    await service.start()
    return service


def items(docs: dict[str, str]) -> list[IngestItem]:
    return [IngestItem(source, text.encode()) for source, text in docs.items()]


async def test_each_mode_finds_the_passage_and_filters_hold(
    knowledge_settings: KnowledgeSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    service = await open_service(knowledge_settings, engine, tmp_path / "data")
    await service.ingest(items(DOCS), collection="default")
    await service.ingest(
        [IngestItem("acme.md", b"# Acme\n\n## Returns\n\nAcme returns within thirty days.\n")],
        collection="default",
        tenant_id="acme",
    )
    for mode in ("hybrid", "dense", "bm25"):
        hits = await service.search("满多少元包邮，运费多少", language="zh", mode=mode, k=3)  # type: ignore[arg-type]
        assert hits and hits[0].chunk.ref == "zh/shipping.md#运费", mode
        assert all(h.chunk.lang == "zh" for h in hits), mode  # the customer's language, when the tenant has it
    english = await service.search("warranty for earbuds and speakers", language="en", k=5)
    assert english[0].chunk.ref == "en/warranty.md#Periods" and all(h.chunk.tenant_id == "default" for h in english)
    acme = await service.search("returns within thirty days", tenant_id="acme", language="en", k=5)
    assert [h.chunk.source for h in acme] == ["acme.md"]
    await service.aclose()


async def test_replaced_and_removed_documents_are_never_returned(
    knowledge_settings: KnowledgeSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    service = await open_service(knowledge_settings, engine, tmp_path / "data")
    await service.ingest(items(DOCS), collection="default")
    changed = dict(DOCS, **{"en/returns.md": DOCS["en/returns.md"].replace("seven days", "fifteen days")})
    await service.ingest(items(changed), collection="default")
    hits = await service.search("return unused item days after delivery", language="en", k=10)
    returns = [h for h in hits if h.chunk.source == "en/returns.md"]
    assert [h.chunk.doc_version for h in returns] == [2] and "fifteen days" in returns[0].chunk.text

    await service.remove(["en/returns.md"])
    assert all(h.chunk.source != "en/returns.md" for h in await service.search("return item", language="en", k=10))
    # Not only filtered by the service: the index itself no longer holds the removed or superseded chunks.
    index = service.index
    assert index is not None and index.count() == sum(d.chunk_count for d in await service.documents())
    await service.aclose()


async def test_a_restarted_worker_serves_the_same_knowledge_without_reindexing(
    knowledge_settings: KnowledgeSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    service = await open_service(knowledge_settings, engine, tmp_path / "data")
    await service.ingest(items(DOCS), collection="default")
    before = [h.chunk.id for h in await service.search("运费 包邮", language="zh", k=3)]
    await service.aclose()

    embedder = HashingEmbedder()
    restarted = KnowledgeService(knowledge_settings, KnowledgeRepository(engine), embedder, data_dir=tmp_path / "data")
    await restarted.start()
    assert embedder.embedded <= 1  # at most the warm-up query: no chunk was embedded again
    assert [h.chunk.id for h in await restarted.search("运费 包邮", language="zh", k=3)] == before
    await restarted.aclose()


@pytest.mark.milvus
async def test_milvus_plain_rrf_uses_milvus_hybrid_search(engine: AsyncEngine, tmp_path: Path) -> None:
    settings = KnowledgeSettings(
        embedding={"backend": "hashing"}, index="milvus", milvus_uri=str(tmp_path / "m.db"), bm25_weight=1.0
    )
    service = await open_service(settings, engine, tmp_path / "data")
    await service.ingest(items(DOCS), collection="default")
    hits = await service.search("满多少元包邮，运费多少", language="zh", k=3)
    assert hits[0].chunk.ref == "zh/shipping.md#运费" and hits[0].dense is not None
    await service.aclose()
