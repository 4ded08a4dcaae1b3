"""The knowledge service as operators and workers see it: sync by content hash, live updates, gaps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from kefu.config import KnowledgeSettings
from kefu.embeddings.testing import HashingEmbedder
from kefu.errors import ConflictError, NotFoundError
from kefu.knowledge.repository import KnowledgeRepository
from kefu.knowledge.service import KnowledgeService
from kefu.store.database import create_engine, migrate

RETURNS = (
    "# Returns\n\n## Window\n\nReturn any item within 7 days of delivery.\n\n"
    "## Postage\n\nThe buyer pays return postage.\n"
)
SHIPPING = "# Shipping\n\n## Fees\n\nOrders over 99 yuan ship free; otherwise shipping costs 8 yuan.\n"
FAQ = "question,answer,similar_questions\nWho pays for returns?,The buyer pays return postage.,return shipping cost\n"


def write_kb(root: Path) -> Path:
    (root / "en").mkdir(parents=True, exist_ok=True)
    (root / "en" / "returns.md").write_text(RETURNS)
    (root / "en" / "shipping.md").write_text(SHIPPING)
    (root / "faq.csv").write_text(FAQ)
    return root


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def open_service(
    engine: AsyncEngine, data_dir: Path, embedder: HashingEmbedder | None = None
) -> KnowledgeService:
    settings = KnowledgeSettings(embedding={"backend": "hashing"})
    service = KnowledgeService(settings, KnowledgeRepository(engine), embedder or HashingEmbedder(), data_dir=data_dir)
    await service.start()
    return service


async def test_sync_is_idempotent_and_follows_changes_and_deletions(engine: AsyncEngine, tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    embedder = HashingEmbedder()
    service = await open_service(engine, tmp_path / "data", embedder)
    first = await service.sync_directory(kb)
    assert sorted(first.added) == ["en/returns.md", "en/shipping.md", "faq.csv"] and not first.failed
    embedded = embedder.embedded

    again = await service.sync_directory(kb)
    assert not again.changed and sorted(again.unchanged) == sorted(first.added)
    assert again.version == first.version and embedder.embedded == embedded  # nothing parsed or embedded again

    (kb / "en" / "returns.md").write_text(RETURNS.replace("7 days", "15 days"))
    (kb / "en" / "shipping.md").unlink()
    changed = await service.sync_directory(kb)
    assert changed.updated == ["en/returns.md"] and changed.removed == ["en/shipping.md"]
    assert changed.embedded == 1  # only the changed chunk; the unchanged "Postage" chunk keeps its vector
    assert changed.version == first.version + 1

    hits = await service.search("return window days", language="en", k=5)
    texts = " ".join(h.chunk.text for h in hits)
    assert "15 days" in texts and "7 days" not in texts
    assert all(h.chunk.source != "en/shipping.md" for h in await service.search("shipping fees 99 yuan", k=10))
    await service.aclose()


async def test_a_broken_file_is_reported_by_name_and_the_rest_still_goes_in(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    kb = write_kb(tmp_path / "kb")
    (kb / "manual.pdf").write_bytes(b"%PDF-1.4 truncated")
    (kb / "notes.xyz").write_text("ignored: not a supported type")
    service = await open_service(engine, tmp_path / "data")
    report = await service.sync_directory(kb)
    assert len(report.added) == 3
    assert [(source, error.split(":")[0]) for source, error in report.failed] == [("manual.pdf", "manual.pdf")]
    assert "not a readable PDF" in report.failed[0][1]
    assert {d.source for d in await service.documents()} == {"en/returns.md", "en/shipping.md", "faq.csv"}
    await service.aclose()


@pytest.mark.parametrize("shared_data_dir", [True, False], ids=["same-machine", "other-machine"])
async def test_every_worker_serves_the_new_version_on_its_next_turn(
    engine: AsyncEngine, tmp_path: Path, shared_data_dir: bool
) -> None:
    kb = write_kb(tmp_path / "kb")
    writer = await open_service(engine, tmp_path / "data-a")
    reader = await open_service(engine, tmp_path / ("data-a" if shared_data_dir else "data-b"))
    await writer.sync_directory(kb)
    assert not reader.has_documents  # the reader has not had a turn since
    assert await reader.refresh()  # a turn starts: one version read, then a reload
    assert reader.version == writer.version and reader.has_documents
    assert not await reader.refresh()  # nothing changed: no reload

    await writer.remove(["en/returns.md"])
    await reader.refresh()
    hits = await reader.search("return window", language="en", k=10)
    assert hits and all(h.chunk.source != "en/returns.md" for h in hits)
    await writer.aclose()
    await reader.aclose()


async def test_a_version_read_with_the_turns_message_is_followed_without_another_read(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The intake reads the shared version in its own transaction; the knowledge stage then follows that one."""
    writer = await open_service(engine, tmp_path / "data-a")
    reader = await open_service(engine, tmp_path / "data-b")
    before = reader.version
    await writer.sync_directory(write_kb(tmp_path / "kb"))
    async with engine.connect() as conn:
        shared = await conn.run_sync(KnowledgeRepository.read_version)
    assert shared == writer.version > before

    reads = 0
    read_version = reader.repository.current_version

    async def counted() -> int:
        nonlocal reads
        reads += 1
        return await read_version()

    reader.repository.current_version = counted  # type: ignore[method-assign]
    assert not await reader.refresh(version=before), "a version read before the change: nothing new to load"
    assert not reader.has_documents
    assert await reader.refresh(version=shared) and reader.has_documents and reader.version == shared
    assert not await reader.refresh(version=shared)
    assert reads == 0, "the version came with the turn: no read of its own"
    await writer.aclose()
    await reader.aclose()


async def test_documents_are_removed_by_id_or_source_and_ambiguity_is_refused(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    kb = write_kb(tmp_path / "kb")
    service = await open_service(engine, tmp_path / "data")
    await service.sync_directory(kb)
    await service.add_paths([kb / "faq.csv"])  # the same name in the uploads collection
    with pytest.raises(ConflictError, match="names several documents"):
        await service.remove(["faq.csv"])
    with pytest.raises(NotFoundError, match="kefu kb list"):
        await service.remove(["nope.md"])
    upload = next(d for d in await service.documents() if d.collection == "uploads")
    report = await service.remove([upload.id])
    assert report.removed == ["faq.csv"] and len(await service.documents()) == 3
    await service.aclose()


async def test_unanswered_questions_are_counted_across_rephrasings(engine: AsyncEngine, tmp_path: Path) -> None:
    service = await open_service(engine, tmp_path / "data")
    for text in ("Do you have a store in Beijing?", "do you have a store in beijing", "你们有线下门店吗？"):
        await service.record_gap(text, tenant_id="default", language="en", reason="not_covered", session_id="s1")
    await service.record_gap("Other tenant", tenant_id="acme", language="en", reason="not_covered", session_id=None)
    gaps = await service.repository.gaps("default")
    assert [(g.count, g.question) for g in gaps] == [(2, "do you have a store in beijing"), (1, "你们有线下门店吗？")]
    assert await service.repository.delete_gaps("default") == 2
    assert [g.question for g in await service.repository.gaps("acme")] == ["Other tenant"]
    await service.aclose()


async def test_vectors_from_another_embedder_are_reembedded_at_start(engine: AsyncEngine, tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    service = await open_service(engine, tmp_path / "data")
    await service.sync_directory(kb)
    version = service.version
    await service.aclose()

    class OtherEmbedder(HashingEmbedder):
        name = "testing:other"

    other = OtherEmbedder(dim=64)
    restarted = await open_service(engine, tmp_path / "data", other)
    assert other.embedded > 0 and restarted.version > version
    assert (await restarted.repository.embedder()) == ("testing:other", 64)
    assert await restarted.search("return window", language="en")
    await restarted.aclose()
